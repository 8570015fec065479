"""decoupled_jax: Diffusion Policy with a decoupled action expert, in JAX/Flax."""
from setuptools import find_packages, setup

# Lower bounds are the versions this library was tested with (see README "Tested versions").
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "chex>=0.1.92",
    "ml-collections>=1.1.0",
    "absl-py>=2.5.1",
    "numpy>=2.0",
    # MJX forward kinematics for stage 1. <3.10 keeps robosuite 1.5.2 (the `sim` extra) working
    # in the same environment (robosuite fails on mujoco >= 3.10).
    "mujoco>=3.3.7,<3.10",
    "mujoco-mjx>=3.3.7,<3.10",
    "h5py>=3.10",
    # RLDS export/reading (decoupled_jax/data/rlds.py): TFDS array_record builders, no TensorFlow.
    "tensorflow-datasets>=4.9.10",
    "importlib_resources",  # tensorflow-datasets needs it when TensorFlow is absent
    "array-record>=0.8",
    # LeRobot v2.1 datasets (decoupled_jax/data/lerobot.py): parquet, the ffmpeg binary that
    # imageio-ffmpeg bundles (mp4 encode/decode), PNG frames.
    "pyarrow>=14",
    "imageio-ffmpeg>=0.5",
    "Pillow>=10.0",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    # The policy server (decoupled_jax/serving): openpi's websocket + msgpack-numpy protocol.
    # (websockets >= 13 has the asyncio server API used there.) The openpi-client package that
    # the tests use as a client pins numpy<2: install it with `pip install --no-deps
    # openpi-client==0.1.2` (its real needs, websockets/msgpack/dm-tree/pillow, are present).
    "websockets>=17.4",
    "msgpack>=1.2.4",
    # Exports' params.safetensors (decoupled_jax/export.py): written and read with the
    # reference implementation, whose Rust header parser validates offsets, sizes and dtypes
    # of untrusted files (docs/security.md).
    "safetensors>=0.8",
]

EXTRAS = {
    # robosuite 1.5.2 itself must be installed with `pip install --no-deps robosuite==1.5.2
    # mink==0.0.5` (its pin mink==0.0.5 declares numpy<2, which jax>=0.10 cannot use; the code
    # paths we use never import mink). These are robosuite's real runtime dependencies.
    "sim": [
        "numba>=0.60",
        "scipy>=1.13",
        "qpsolvers[quadprog]>=4.0",
        "Pillow>=10.0",
        "opencv-python-headless>=4.9",
        "termcolor>=2.4",
        "imageio>=2.34",
        "imageio-ffmpeg>=0.5",
    ],
    "dev": [
        "pytest>=8.0",
        "pytest-xdist>=3.5",   # `make test` runs the suite on 2 workers (2-core CI: ~30 % faster)
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
    ],
}

setup(
    name="decoupled_jax",
    version="0.1.0",
    description="Diffusion Policy with a decoupled action expert (DAE) in JAX/Flax",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["decoupled_jax", "decoupled_jax.*"]),
    # The pretrained stage-1 experts ship in the wheel (decoupled_jax/pretrained/<name>/).
    package_data={"decoupled_jax.pretrained": ["*/*.safetensors", "*/*.json", "*/*.md"],
                  # packaged robot models (config.robot.mjcf='aloha'): MJCF text only
                  "decoupled_jax.kinematics": ["assets/*/*.xml", "assets/*/LICENSE",
                                               "assets/*/README.md"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": [
        "decoupled-jax-serve=decoupled_jax.serving.cli:serve_main",
        "decoupled-jax-export=decoupled_jax.serving.cli:export_main",
    ]},
)
