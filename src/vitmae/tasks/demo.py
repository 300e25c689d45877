"""`vitmae demo`: a web page on localhost to mask images and watch the reconstructions of a masked
autoencoder, or to watch a `vitmae segment` or `vitmae detect` run's predictions (its best checkpoint, as
`vitmae predict` takes it; a detection run keeps its last). The run's family serves its page; any other
checkpoint gets the masked autoencoder's."""
from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..families import family, run_family
from ..options import opt
from ..train.run_dir import run_checkpoint
from .options import HeadOptions, Task


@dataclass
class DemoOptions(HeadOptions):
    checkpoint: str | None = opt(None, "any checkpoint `vitmae info` reads, or a run directory (a `vitmae segment` "
                                 "run: its segmentation view; a `vitmae detect` run: its detection view)",
                                 required=True)
    port: int = opt(7860, "TCP port to listen on", min=1, max=65535)
    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0: all)")


def check_port_free(host: str, port: int) -> None:
    """A clear error now, rather than the web server's traceback once the model is loaded."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}): choose another --port") from None


def demo(cfg: DemoOptions) -> dict[str, Any]:
    """Serve the demo until Ctrl+C."""
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("the demo needs gradio: pip install 'vitmae[demo]'")
    check_port_free(cfg.host, cfg.port)
    found = run_family(run_checkpoint(cfg.checkpoint, "best"))
    spec = found[0] if found else family("mae")
    app, url = spec.slot("serve", "demo")(cfg.checkpoint, cfg.port, cfg.host, cfg.head_overrides())
    print(f"demo of {cfg.checkpoint} on {url} (Ctrl+C stops it)", flush=True)
    app.block_thread()
    return {"url": url}


TASK = Task("demo", "web page on localhost to mask images and watch the reconstructions, or to watch a "
            "segmentation or detection run's predictions", DemoOptions, demo, lambda summary, cfg: [],
            config_file=False)
