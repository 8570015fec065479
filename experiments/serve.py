"""Serve a stage-2 policy over websockets (openpi's protocol; decoupled_jax/serving/protocol.py).

  python experiments/serve.py --checkpoint=workdirs/lift_decoupled/checkpoints --port=8000
  python experiments/serve.py --export=exports/lift --port=8000 --batch_size=4

Clients: openpi-client's WebsocketClientPolicy unchanged (one observation per request, one
frame per key with 'reset': true at each new episode, or the whole (n_obs_steps, ...)
history), or `decoupled_jax.serving.client.RemotePolicy` (the runner's contract, ready for
`sim.evaluator.evaluate_policy`). The policy is compiled before the port opens; GET /healthz
answers OK. Listens on 127.0.0.1 unless --host says otherwise; Ctrl-C / SIGTERM stop it.

Exposure (docs/security.md): --token_file=FILE (or $DECOUPLED_JAX_SERVE_TOKEN) makes every
client present the token (`Authorization: Bearer <token>`; openpi-client: `api_key=`);
requests from browser pages (an Origin header) are refused unless --allow_origin names it;
--max_connections (default 32) and --max_message_bytes (default: from the policy's inputs)
bound what clients can make the server hold. To serve beyond this machine, keep the server
on 127.0.0.1 behind a TLS reverse proxy (wss://) and set a token.
"""
from decoupled_jax import cli

cli.prelude()  # before jax / mujoco are imported

from decoupled_jax.serving import cli as serving_cli  # noqa: E402

if __name__ == "__main__":
  serving_cli.serve_main()
