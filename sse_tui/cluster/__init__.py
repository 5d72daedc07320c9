"""`sse-tui cluster`: run-loadtest.sh's options, cluster endpoint detection and --port-forward.

run-loadtest.sh only finds Python, keeps .venv current and execs `sse-tui cluster "$@"`;
everything it used to decide in shell lives here, where it is tested:

- `options`: the drop-in options of the original script (-m -r -s -c -t -d --duration,
  --port-forward, --install-only, -h); the values are judged by sse-tui's own parser.
- `kube`: which kubeconfig, and the LoadBalancer addresses of svc/redis and svc/sse-adapter
  (and svc/nats, for `--nats` without a value: the per-hop tap).
- `port_forward`: kubectl port-forward tunnels and sse-tui as a child between them.
- `command`: the glue, `main(argv)`.
"""

from sse_tui.cluster.command import Launch, main

__all__ = ["Launch", "main"]
