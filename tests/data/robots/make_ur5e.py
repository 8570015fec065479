"""Writes tests/data/robots/ur5e/robot.xml from the robosuite 1.5.2 wheel (README.md here).

  . .venv/bin/activate && python tests/data/robots/make_ur5e.py

Takes `robosuite/models/assets/robots/ur5e/robot.xml` and, with a plain XML edit (numbers,
names and layout of the kinematic tree untouched): drops the <actuator>, <asset> (meshes,
materials) and every <geom> and <camera> element (meshes are not shipped), adds a site
`ee_site` at the origin of the `right_hand` body (where robosuite attaches a gripper) and a
keyframe `home` = robosuite's `UR5e.init_qpos`.
"""
import importlib.util
import os
import pathlib
import xml.etree.ElementTree as ET

INIT_QPOS = "-0.470 -1.735 2.480 -2.275 -1.590 -1.991"   # robosuite UR5e.init_qpos (1.5.2)


def main():
  spec = importlib.util.find_spec("robosuite")
  src = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / "assets" /
         "robots" / "ur5e" / "robot.xml")
  tree = ET.parse(src)
  root = tree.getroot()
  for tag in ("actuator", "asset"):
    for e in root.findall(tag):
      root.remove(e)
  for parent in root.iter():
    for child in list(parent):
      if child.tag in ("geom", "camera"):
        parent.remove(child)
  hand = root.find(".//body[@name='right_hand']")
  ET.SubElement(hand, "site", {"name": "ee_site", "pos": "0 0 0", "size": "0.01"})
  key = ET.SubElement(root, "keyframe")
  ET.SubElement(key, "key", {"name": "home", "qpos": INIT_QPOS})
  ET.indent(tree, space="  ")
  out = pathlib.Path(__file__).resolve().parent / "ur5e" / "robot.xml"
  os.makedirs(out.parent, exist_ok=True)
  header = ("<!-- robosuite 1.5.2 (MIT licence), robosuite/models/assets/robots/ur5e/robot.xml, "
            "stripped of\n     actuators, meshes, materials, geoms and cameras; site ee_site and "
            "keyframe home added.\n     Regenerate: python tests/data/robots/make_ur5e.py "
            "(see README.md). -->\n")
  out.write_text(header + ET.tostring(root, encoding="unicode") + "\n")
  print("wrote", out, out.stat().st_size, "bytes")


if __name__ == "__main__":
  main()
