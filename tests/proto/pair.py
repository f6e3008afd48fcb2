"""An in-memory pair harness: a gateway and a connector joined by a fake link on a simulated
clock that jumps to the next ``get_timer()`` (aioquic's ``roundtrip``, quinn's ``Pair::step``).

Importable by other tests, fuzzers and benchmarks::

    from tests.proto.pair import Pair
    pair = Pair()
    pair.handshake()
    sid = pair.gateway.open_stream(RequestHead(method="POST", path="/v1/chat/completions"))
    pair.flush()
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokios_proto import (
    PROTOCOL_VERSIONS,
    Config,
    Connection,
    ConnectorConnection,
    DeploymentOffer,
    Event,
    GatewayConnection,
    Hello,
    HelloReceived,
    Secret,
)

CREDENTIAL = "tok-connector-secret-0123456789"


def make_hello(*, versions: tuple[int, ...] = PROTOCOL_VERSIONS,
               credential: str = CREDENTIAL) -> Hello:
    return Hello(credential=Secret(credential), connector_id="conn-1", software_version="0.1.0",
                 deployments=(DeploymentOffer(name="llama", upstream_model="llama3:8b"),
                              DeploymentOffer(name="qwen", upstream_model="qwen2.5:7b")),
                 versions=versions)


@dataclass
class Pair:
    """Two connections joined in memory; ``*_events`` collect everything each side emitted."""

    gateway_config: Config | None = None
    connector_config: Config | None = None
    hello: Hello | None = None
    now: float = 0.0
    #: Deliver output as whole WebSocket messages (True) or as one byte string per flush.
    use_messages: bool = True
    gateway: GatewayConnection = field(init=False)
    connector: ConnectorConnection = field(init=False)
    gateway_events: list[Event] = field(default_factory=list)
    connector_events: list[Event] = field(default_factory=list)
    #: Bytes moved each way, for tests that count.
    to_connector: int = 0
    to_gateway: int = 0

    def __post_init__(self) -> None:
        self.gateway = GatewayConnection(self.gateway_config)
        self.connector = ConnectorConnection(self.connector_config,
                                             hello=self.hello or make_hello())

    def _move(self, src: Connection, dst: Connection) -> int:
        if self.use_messages:
            chunks = src.messages_to_send()
        else:
            data = src.data_to_send()
            chunks = [data] if data else []
        moved = 0
        for chunk in chunks:
            moved += len(chunk)
            dst.receive_data(chunk, self.now)
        return moved

    def drain_events(self) -> None:
        while (event := self.gateway.next_event()) is not None:
            self.gateway_events.append(event)
        while (event := self.connector.next_event()) is not None:
            self.connector_events.append(event)

    def flush(self, limit: int = 1000) -> None:
        """Move output both ways until neither side has anything to send."""
        for _ in range(limit):
            sent = self._move(self.connector, self.gateway)
            self.to_gateway += sent
            received = self._move(self.gateway, self.connector)
            self.to_connector += received
            self.drain_events()
            if not sent and not received:
                return
        raise AssertionError("the pair never went quiet")

    def handshake(self, *, session_id: str = "sess-1",
                  deployments: tuple[str, ...] = ("llama",), node_id: str = "") -> None:
        """Run HELLO -> accept -> WELCOME; both ends are OPEN afterwards."""
        self.gateway.start(self.now)
        self.connector.start(self.now)
        self.flush()
        hellos = [e for e in self.gateway_events if isinstance(e, HelloReceived)]
        assert hellos, f"no HelloReceived: {self.gateway_events}"
        self.gateway.accept(session_id, deployments, self.now, node_id=node_id)
        self.flush()

    def next_timer(self) -> float | None:
        timers = [t for t in (self.gateway.get_timer(), self.connector.get_timer())
                  if t is not None]
        return min(timers) if timers else None

    def advance(self, until: float | None = None) -> float | None:
        """Jump the clock to the next timer (not beyond ``until``), fire timers, flush."""
        timer = self.next_timer()
        if timer is None or (until is not None and timer > until):
            if until is not None:
                self.now = max(self.now, until)
            return None
        self.now = max(self.now, timer)
        self.gateway.handle_timer(self.now)
        self.connector.handle_timer(self.now)
        self.flush()
        return self.now

    def events_of(self, side: str, kind: type[Event]) -> list[Event]:
        events = self.gateway_events if side == "gateway" else self.connector_events
        return [e for e in events if isinstance(e, kind)]
