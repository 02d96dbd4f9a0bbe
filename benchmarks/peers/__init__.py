"""Peer ground-software decoders, each fed our Apollo frames in its own definition language.

Every adapter module imports its peer lazily (in `build`), so this package imports even when
none of the peers is installed; `available()` says which are.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeerInfo:
    key: str
    module: str  # adapter module in this package
    cls: str  # adapter class
    imports: str  # the peer's top-level import name
    package: str  # its distribution on PyPI

    def missing(self) -> str | None:
        """Why this peer cannot run here, or None when it can."""
        if self.package == "ait-core" and sys.version_info >= (3, 12):
            return "ait-core 3.x declares Python <3.12"
        if importlib.util.find_spec(self.imports) is None:
            return f"not installed (pip install {self.package}, or the project's [bench] extra)"
        return None

    def create(self) -> Any:
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return getattr(mod, self.cls)()


PEERS = [
    PeerInfo("cosmos", "cosmos_peer", "CosmosPeer", "openc3", "openc3"),
    PeerInfo("ait", "ait_peer", "AitPeer", "ait", "ait-core"),
    PeerInfo("xtce", "xtce_peer", "XtcePeer", "space_packet_parser", "space_packet_parser"),
    PeerInfo("ccsdspy", "ccsdspy_peer", "CcsdspyPeer", "ccsdspy", "ccsdspy"),
]
