"""`rupost panel serve`: the panel under gunicorn over HTTPS with the control_panel certificate.

The active ``control_panel`` certificate (the builtin ``rupost-control-panel-builtin``
until an administrator adds one with ``rupost cert add --cert-type control_panel``) is
read from the database when the server starts and written, with its key, into
``/run/rupost/panel`` (0700 directory, 0600 files); a new certificate takes effect when
the server restarts (``systemctl restart rupost``), as the guide says.
"""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from ..db.models import Certificate
from ..errors import NotFoundError
from ..services.setup import BUILTIN_PANEL_CERT


def write_tls_files(rp) -> tuple[Path, Path, str]:
    """The active control_panel certificate and key as files only root can read; returns
    (certificate path, key path, certificate name)."""
    with rp.dbs.session("main") as s:
        row = s.scalar(select(Certificate).where(Certificate.cert_type == "control_panel", Certificate.active))
        if row is None:
            row = s.scalar(select(Certificate).where(Certificate.name == BUILTIN_PANEL_CERT))
        if row is None:
            raise NotFoundError(f"no control_panel certificate and no {BUILTIN_PANEL_CERT}: run rupost-wizard "
                                f"(or rupost cert regenerate-builtin {BUILTIN_PANEL_CERT})")
        cert_pem, key_pem, name = row.cert_pem, row.key_pem, row.name
    directory = rp.layout.run / "panel"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    paths = []
    for filename, text in (("panel.crt", cert_pem), ("panel.key", key_pem)):
        path = directory / filename
        tmp = directory / f".{filename}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1], name


TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS"


def _tls_context(config, default_ssl_context_factory):
    """TLS 1.2 and 1.3 only; TLS 1.2 with forward-secret AEAD ciphers."""
    import ssl

    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def default_bind(config) -> str:
    host = config.listen_address if config.listen_address not in ("*", "") else "0.0.0.0"
    return f"{host}:{config.port('panel')}"


def serve(root, bind: str | None = None, workers: int = 2, threads: int = 4, access_log: str | None = None) -> None:
    """Run the panel in the foreground under gunicorn (gthread workers) until SIGTERM."""
    from gunicorn.app.base import BaseApplication

    from ..services import RuPost

    rp = RuPost.open(root, actor="panel")
    try:
        cert, key, name = write_tls_files(rp)
        rp.admins.secret_key()  # created once, before the workers race for it
        bind = bind or default_bind(rp.config)
    finally:
        rp.close()

    options = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "certfile": str(cert),
        "keyfile": str(key),
        "ssl_context": _tls_context,
        "ciphers": TLS12_CIPHERS,
        "control_socket_disable": True,  # gunicorn's control socket would be shared by every instance
        "timeout": 120,
        "graceful_timeout": 600,  # a stopping worker lets a running deploy job finish
        "proc_name": "rupost-panel",
        # stdout/stderr: the journal of rupost.service, or the file the starter appends them to
        "accesslog": access_log or "-",
        "errorlog": "-",
        "limit_request_line": 8190,
        "forwarded_allow_ips": "",  # the panel is reached directly: never trust X-Forwarded-For
    }

    class PanelApplication(BaseApplication):
        def load_config(self):
            for key_name, value in options.items():
                if key_name in self.cfg.settings:  # control_socket_disable: gunicorn >= 25 only
                    self.cfg.set(key_name, value)

        def load(self):
            from . import create_app

            return create_app(root)

    print(f"rupost panel: https://{bind} (certificate {name})", flush=True)
    PanelApplication().run()


def PanelProcess(root, bind: str | None = None, backoff: float = 10.0):
    """`rupost panel serve` as a child of the node agent (see rupost/node/core_processes.py)."""
    from rupost.node.core_processes import CoreProcess

    return CoreProcess("panel", root, ["panel", "serve"] + (["--bind", bind] if bind else []), backoff)
