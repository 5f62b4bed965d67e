"""Typed settings: a TOML file plus ``MAILFLEET_*`` environment overrides.

Precedence, highest first: explicit overrides from the command line, the
environment (``MAILFLEET_DATA_DIR``, nested keys with ``__`` as in
``MAILFLEET_LIMITS__MAX_RECIPIENTS``), the TOML file, the defaults below.
Every problem is reported at once, each naming the key at fault.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# Schemes each storage role accepts: the embedded default's and the distributed profile's.
SUPPORTED_SCHEMES: dict[str, set[str]] = {
    "metadata_url": {"sqlite", "postgresql"},
    "blob_url": {"file", "s3"},
    "queue_url": {"sqlite", "nats"},
    "cache_url": {"memory", "redis"},
    "events_url": {"memory", "local", "redis"},
}


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every bad key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


def _check_networks(value: list[str]) -> list[str]:
    for network in value:
        ipaddress.ip_network(network, strict=False)  # ValueError names it
    return value


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class ClamdAddressError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """``unix:/path/clamd.sock`` or ``tcp://HOST:PORT``."""

    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        if text.startswith("unix:"):
            path = text[len("unix:") :].removeprefix("//")
            if not path.startswith("/"):
                raise ClamdAddressError(f"expected unix:/absolute/path, got {text!r}")
            return cls(path=path)
        if text.startswith("tcp://"):
            host, sep, port = text[len("tcp://") :].rstrip("/").rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ClamdAddressError(f"expected tcp://HOST:PORT, got {text!r}")
            return cls(host=host.strip("[]"), port=int(port))
        raise ClamdAddressError(f"expected unix:/PATH or tcp://HOST:PORT, got {text!r}")

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"tcp://{self.host}:{self.port}"


# Types a mail client would run when opened (Outlook's and Gmail's blocked
# lists, shortened to what is common).
DEFAULT_BLOCKED_EXTENSIONS = (
    "exe",
    "scr",
    "com",
    "bat",
    "cmd",
    "pif",
    "js",
    "jse",
    "vbs",
    "vbe",
    "wsf",
    "wsh",
    "hta",
    "msi",
    "msp",
    "ps1",
    "jar",
    "lnk",
    "cpl",
    "reg",
    "docm",
    "xlsm",
    "pptm",
    "dotm",
    "xltm",
    "potm",
    "ppsm",
    "xlam",
    "ppam",
)


class MetadataShard(_Section):
    """One PostgreSQL mailbox shard (decision 0016)."""

    name: str = Field(
        min_length=1,
        description="stable name each account's placement records (`mailfleet account move"
        " ADDRESS --to NAME`); never reuse one for another database",
    )
    url: str = Field(description="postgresql://USER@HOST:PORT/DATABASE of the shard's primary")
    replica_url: str = Field(
        "",
        description="postgresql:// of its streaming replica: listings and search read there"
        " (they may lag by the replication delay); empty: everything on the primary",
    )


class StorageSettings(_Section):
    """Where each storage role lives, chosen by URL scheme. Empty means the
    embedded default under ``data_dir``."""

    metadata_url: str = Field(
        "",
        description="sqlite:///PATH, or postgresql://USER@HOST:PORT/DATABASE: the directory"
        " database of a fleet (domains, accounts, sessions, placements)",
    )
    metadata_shards: list[MetadataShard] = Field(
        default_factory=list,
        description="PostgreSQL only: the mailbox shards ([[storage.metadata_shards]] name,"
        " url, replica_url); none: the directory database holds the mailboxes too, as"
        " shard 'main'",
    )
    blob_url: str = Field(
        "",
        description="file:///DIR, or s3://BUCKET[/PREFIX]?endpoint=URL&region=R"
        " (more parameters and the credentials: docs/decisions/0015-blobs-on-s3.md)",
    )
    queue_url: str = Field(
        "",
        description="sqlite:///PATH, or nats://HOST:PORT[,HOST:PORT...]/?prefix=mailfleet"
        "&replicas=1&publish_patience=20 (JetStream: one work-queue stream PREFIX_<queue>"
        " per queue, each kept on REPLICAS servers; list every server of the cluster;"
        " a put retries for PUBLISH_PATIENCE seconds before it answers 'try later')",
    )
    cache_url: str = Field(
        "memory://",
        description="memory:// (this process only), or redis://HOST:PORT[/DB]?prefix=mailfleet"
        " (shared by every process; keys PREFIX:<key>)",
    )
    events_url: str = Field(
        "",
        description="local:///DIR (wake-ups between the processes sharing a data"
        " directory, the default: DATA_DIR/events), memory:// (this process only),"
        " or redis://HOST:PORT[/DB]?prefix=mailfleet (every process of a fleet: Redis"
        " pub/sub on channels PREFIX:wake, PREFIX:revoke; decision 0014)",
    )
    incoming_lease_seconds: float = Field(
        30,
        gt=0,
        description="how long worker-in holds a batch of `incoming` before the mails go to"
        " another worker: also how long a mail waits that went to a worker-in that died",
    )
    change_log_keep: int = Field(
        10_000,
        ge=100,
        description="changes kept per account in its change log; a client further"
        " behind than this refetches its folders and lists (a 'reset' event)",
    )
    migrate_on_start: bool = Field(
        True,
        description="bring the metadata schema to the newest revision when a process "
        "opens it; a fleet sets false and runs `mailfleet db upgrade` once per release, "
        "and then a process refuses a database not at the newest revision",
    )


class HttpSettings(_Section):
    listen: str = Field("127.0.0.1:8080", description="HOST:PORT of the HTTP API")
    trusted_origins: list[str] = Field(
        default_factory=list,
        description=(
            "browser origins (scheme://host[:port]) besides the API's own that may send"
            " state-changing requests; any other Origin header is refused (decision 0012)"
        ),
    )

    page_cache_entries: int = Field(
        2048,
        ge=0,
        description=(
            "listing pages each api process keeps encoded, each valid while its account's"
            " change head stays where it was (0: none; decision 0017)"
        ),
    )

    _check = field_validator("listen")(_parse_hostport)


class SmtpSettings(_Section):
    listen: str = Field("127.0.0.1:2525", description="HOST:PORT of the MX (smtp-in)")
    submission_listen: str = Field("127.0.0.1:2587", description="HOST:PORT of submission")
    hostname: str = Field("localhost", description="our name in EHLO, Received and Message-ID")
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain for STARTTLS; a self-signed one when unset"
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    max_connections_per_ip: int = Field(20, gt=0, description="concurrent, per client IP")
    connections_per_minute_per_ip: int = Field(600, gt=0, description="421 beyond")
    messages_per_minute_per_ip: int = Field(600, gt=0, description="451 beyond")
    timeout_seconds: float = Field(
        300,
        gt=0,
        description="longest wait for a client's next command, then 421 and hang up (RFC 5321"
        " section 4.5.3.2.7 asks for at least 5 minutes)",
    )
    data_timeout_seconds: float = Field(
        600,
        gt=0,
        description="longest a whole DATA transfer may take, however steadily the bytes come"
        " (a client dribbling one byte a second), then 421 and hang up",
    )
    proxy_protocol: bool = Field(
        False,
        description="behind a TCP balancer (HAProxy `send-proxy`): a connection from one of"
        " proxy_trusted must open with a PROXY protocol header (v1 or v2), and the client"
        " it names is the one rate limits, Received lines and SPF see; connections from"
        " other addresses are served as direct clients (MX and submission)",
    )
    proxy_trusted: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="addresses or networks of the balancers whose PROXY headers are believed",
    )
    recipient_check_timeout_seconds: float = Field(
        8,
        gt=0,
        description="smtp-in: longest wait for the directory behind a RCPT check (a backend"
        " that hangs) before answering 451",
    )
    insecure_auth_on_loopback: bool = Field(
        False,
        description="let submission clients on 127.0.0.1/::1 AUTH without STARTTLS (tests only)",
    )
    dns_servers: list[str] = Field(
        default_factory=list,
        description="name servers for MX lookups (IP addresses); empty: /etc/resolv.conf",
    )
    dns_port: int = Field(53, gt=0, le=65535, description="port of dns_servers")
    dns_timeout_seconds: float = Field(10, gt=0, description="one lookup, retries included")
    routes: dict[str, str] = Field(
        default_factory=dict,
        description='static next hops replacing DNS: {"example.org" = "127.0.0.1:2526"}, '
        '"*" for every domain (development and tests)',
    )

    _check = field_validator("listen", "submission_listen")(_parse_hostport)

    _networks = field_validator("proxy_trusted")(_check_networks)


class DeliverySettings(_Section):
    """worker-out: how outgoing mail is delivered and retried."""

    concurrency: int = Field(20, gt=0, description="deliveries in flight per worker-out")
    remote_port: int = Field(
        25, gt=0, le=65535, description="port of the MX hosts DNS names (tests change it)"
    )
    allow_private_destinations: bool = Field(
        False,
        description="deliver to MX hosts DNS resolves to loopback or private addresses "
        "(tests; [smtp.routes] are always allowed)",
    )
    connections_per_destination: int = Field(
        5, gt=0, description="concurrent connections to one destination domain"
    )
    connect_timeout_seconds: float = Field(30, gt=0)
    command_timeout_seconds: float = Field(300, gt=0, description="one SMTP reply")
    attempt_timeout_seconds: float = Field(
        600, gt=0, description="one delivery attempt as a whole; must be under lease_seconds"
    )
    lease_seconds: float = Field(
        900, gt=0, description="a crashed worker's item is retried after this"
    )
    idle_connection_seconds: float = Field(
        10, ge=0, description="keep a connection open this long for the next message"
    )
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0],
        min_length=1,
        description="delay before each retry; the last repeats",
    )
    max_age_seconds: float = Field(5 * 86400, gt=0, description="bounce after this long")
    jitter: float = Field(0.1, ge=0, lt=1, description="each delay varies by up to this share")
    time_scale: float = Field(
        1.0, gt=0, description="multiplies every retry delay and the max age (tests)"
    )
    stale_after_seconds: float = Field(
        600, gt=0, description="a sent message still queued this long is queued again (sweep)"
    )
    sweep_interval_seconds: float = Field(300, gt=0, description="how often worker-out sweeps")
    max_attempts_for_bad_items: int = Field(
        5, gt=0, description="an item that keeps failing in our code goes to error"
    )

    @model_validator(mode="after")
    def _attempt_fits_lease(self) -> DeliverySettings:
        # Otherwise a slow attempt outlives its lease and a second worker
        # delivers the same mail alongside it.
        if self.attempt_timeout_seconds >= self.lease_seconds:
            raise ValueError("attempt_timeout_seconds must be under lease_seconds")
        return self


class BlobSettings(_Section):
    """The blob lifecycle (decision 0018): worker-out frees blobs that no
    message, upload or queued item names any more."""

    sweep: bool = Field(True, description="run the periodic sweep in worker-out")
    sweep_interval_seconds: float = Field(3600, gt=0, description="time between two runs")
    grace_seconds: float = Field(
        86400,
        gt=0,
        description="a blob is condemned no sooner than this after it was written, and freed "
        "no sooner than this after it was condemned; must exceed the longest time between "
        "storing a blob and committing what names it",
    )
    sweep_limit: int = Field(
        100_000, gt=0, description="live blobs one run examines; the next run continues"
    )
    queue_scan_limit: int = Field(
        100_000, gt=0, description="a run changes nothing when a queue holds more items"
    )


class LimitSettings(_Section):
    max_message_bytes: int = Field(25 * 1024 * 1024, gt=0, description="whole message")
    max_header_bytes: int = Field(
        256 * 1024,
        gt=0,
        description="header section of a message received over SMTP (MX and submission);"
        " 552 5.3.4 beyond",
    )
    max_attachment_bytes: int = Field(25 * 1024 * 1024, gt=0, description="one upload")
    max_recipients: int = Field(100, gt=0, description="To + Cc + Bcc of one message")
    send_per_minute: int = Field(60, gt=0, description="messages an account may send a minute")
    send_per_day: int = Field(2000, gt=0, description="messages an account may send a day")
    # Outbound abuse (delivery/abuse.py): counted per account and window.
    abuse_window_seconds: float = Field(
        3600, gt=0, description="the window in which spam sends and rate-limited sends count"
    )
    spam_sends_before_throttle: int = Field(
        3, gt=0, description="sends judged spam within the window before the account is throttled"
    )
    throttled_sends_per_hour: int = Field(
        10, gt=0, description="what a throttled account may send an hour (429 past it)"
    )
    spam_sends_before_hold: int = Field(
        10, gt=0, description="sends judged spam within the window before sending is held"
    )
    rate_limited_sends_before_hold: int = Field(
        30,
        gt=0,
        description="sends refused by send_per_minute/send_per_day within the window before"
        " sending is held",
    )


class AuthSettings(_Section):
    session_ttl_seconds: float = Field(
        30 * 24 * 3600,
        gt=0,
        description="a token works this long after its login; then it answers 401"
        " session_expired and its sockets and long polls end",
    )
    # RFC 9106 section 4, second recommended option (64 MiB); tests lower it.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    min_password_length: int = Field(8, ge=1)
    # Login throttling (accounts/throttle.py), shared by every door that takes
    # a password: POST /v1/sessions and submission AUTH.
    failed_logins_per_address: int = Field(
        5, gt=0, description="failed logins for one address within the window that lock it"
    )
    failed_logins_per_ip: int = Field(
        20,
        gt=0,
        description="failed logins from one client (IPv4 address, IPv6 /64) within the window"
        " that lock it, whatever addresses they tried",
    )
    failed_login_window_seconds: float = Field(
        15 * 60, gt=0, description="how long a failed login counts"
    )
    lockout_seconds: float = Field(
        60, gt=0, description="the first lock; each further one within lockout_memory doubles"
    )
    max_lockout_seconds: float = Field(3600, gt=0, description="the longest lock")
    lockout_memory_seconds: float = Field(
        24 * 3600, gt=0, description="how long locks are remembered for the doubling"
    )


class MetricsSettings(_Section):
    """``/metrics`` for Prometheus, and the operations port of every role."""

    listen: str = Field(
        "",
        description="HOST:PORT of the operations port (/metrics, /healthz, /readyz), served"
        " by every role of the process; the only HTTP of smtp-in, submission, worker-in and"
        " worker-out (empty: none; api and realtime serve them on their HTTP port too)",
    )
    allow_from: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="networks whose clients may read /metrics (others get 403); a client"
        " behind the balancer is the one X-Forwarded-For names",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _parse_hostport(value) if value else value

    _networks = field_validator("allow_from")(_check_networks)


class LoggingSettings(_Section):
    """Structured logs (decision 0029): every line one JSON object, or a
    readable line on a terminal; read back by ``mailfleet trace``."""

    format: str = Field(
        "auto",
        pattern="^(auto|json|console)$",
        description="json (one object a line), console (readable, coloured on a terminal),"
        " or auto: console when the log goes to a terminal, else json",
    )
    level: str = Field(
        "info",
        pattern="^(debug|info|warning|error)$",
        description="the lowest level written by mailfleet's own loggers (others: warning)",
    )
    file: Path | None = Field(
        None, description="append the log to this file (default: standard error)"
    )
    trace_logs: list[str] = Field(
        default_factory=list,
        description="log files (paths or globs) `mailfleet trace` reads when given none"
        " (default: `file`); a fleet names every process's log",
    )


class RealtimeSettings(_Section):
    """The ``realtime`` role: WebSocket push and long poll over the change log."""

    heartbeat_seconds: float = Field(
        20, gt=0, description="a WebSocket protocol ping this often (RFC 6455 5.5.2)"
    )
    heartbeat_timeout_seconds: float = Field(
        20, gt=0, description="a socket whose pong has not come back by then is closed"
    )
    auth_timeout_seconds: float = Field(
        10, gt=0, description="time a new socket has to send its token before it is closed"
    )
    auth_check_seconds: float = Field(
        60,
        gt=0,
        description="each socket's token is checked again this often (an expired session);"
        " a logout, a new password or a disabled account close it at once, by a revocation"
        " on the event bus",
    )
    poll_seconds: float = Field(
        5,
        gt=0,
        description="the change log is read this often even without a wake-up, so a lost"
        " wake-up only delays an event",
    )
    send_timeout_seconds: float = Field(
        10,
        gt=0,
        description="a socket that accepts no data for this long while events wait is too"
        " slow: it gets 'reset' and is closed",
    )
    long_poll_seconds: float = Field(
        25, gt=0, le=60, description="how long GET /v1/events waits when no timeout is given"
    )


class FilterSettings(_Section):
    """The filter pipeline (filters/): which filters run, and the scores at
    which a mail is spam (Junk) or refused."""

    builtin_rules: bool = Field(True, description="GTUBE and the header rules (filters/rules.py)")
    sender_auth: bool = Field(
        True,
        description="SPF, DKIM, DMARC and ARC on mail from the MX (filters/sender_auth.py),"
        " through smtp.dns_servers; checked at SMTP time, where DMARC p=reject and forged"
        " hosted senders are refused with 550 5.7.1",
    )
    rspamd_url: str = Field(
        "",
        description="rspamd's normal worker, e.g. http://127.0.0.1:11333: every mail is also"
        " scored there (/checkv2; filters/rspamd.py); empty: not used",
    )
    rspamd_timeout_seconds: float = Field(
        20, gt=0, description="one rspamd check; past it the mail waits and is tried again"
    )
    rspamd_password: str = Field("", description="rspamd's controller password, when it asks")
    smtp_check_seconds: float = Field(
        15,
        gt=0,
        description="smtp-in: longest wait for the SMTP-time checks after DATA; past it the"
        " mail is accepted and worker-in checks it",
    )
    spam_score: float = Field(5.0, description="total score from which a mail goes to Junk")
    reject_score: float = Field(
        15.0, description="total score from which a mail is refused (Junk once accepted)"
    )
    clamd: str = Field(
        "",
        description="ClamAV's clamd, unix:/PATH/clamd.sock or tcp://HOST:PORT: every mail in"
        " and out is scanned (filters/clamav.py); a virus quarantines inbound mail and"
        " refuses a send; empty: no virus scanning",
    )
    clamd_timeout_seconds: float = Field(
        30.0, gt=0, description="longest wait for clamd's answer on one mail; then it waits"
    )
    clamd_max_stream_bytes: int = Field(
        25 * 1024 * 1024,
        gt=0,
        description="clamd's StreamMaxLength: a larger mail is scanned part by part",
    )
    attachment_policy: bool = Field(
        True,
        description="block programs, scripts and macro documents by name and content,"
        " also inside zips (filters/attachments.py): inbound quarantined, sends refused",
    )
    blocked_extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_EXTENSIONS),
        description="file name extensions the attachment policy blocks (no dot)",
    )

    bayes: bool = Field(
        True,
        description="the Bayes classifier trained by moves into and out of Junk (filters/bayes.py)",
    )
    bayes_min_trained: int = Field(
        10,
        ge=1,
        description="trained spam and trained ham mails each (an account's, or the global"
        " statistics') before the classifier has an opinion from them",
    )
    bayes_min_accounts: int = Field(
        5,
        ge=1,
        description="accounts that must have trained the global statistics before they"
        " judge mail of others (one user's taste is not everyone's)",
    )
    bayes_weight: float = Field(
        6.0,
        ge=0,
        description="score of a certain Bayes verdict: spam probability p adds"
        " weight × (2p − 1) when p is past the spam or ham cutoff",
    )

    @field_validator("clamd")
    @classmethod
    def _check_clamd(cls, value: str) -> str:
        if value:
            ClamdAddress.parse(value)  # its ValueError names the problem
        return value


class DomainSeed(_Section):
    name: str
    open_signup: bool = False


class Settings(_Section):
    """The whole configuration. Built by ``load_settings``; tests build their own."""

    data_dir: Path = Field(Path("./mailfleet-data"), description="embedded stores live here")
    storage: StorageSettings = StorageSettings()
    http: HttpSettings = HttpSettings()
    smtp: SmtpSettings = SmtpSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    delivery: DeliverySettings = DeliverySettings()
    blobs: BlobSettings = BlobSettings()
    realtime: RealtimeSettings = RealtimeSettings()
    metrics: MetricsSettings = MetricsSettings()
    filters: FilterSettings = FilterSettings()
    logging: LoggingSettings = LoggingSettings()
    domains: list[DomainSeed] = Field(
        default_factory=list, description="hosted domains ensured at start"
    )

    def storage_url(self, role: str) -> str:
        """The configured URL for a storage role, or its embedded default."""
        url: str = getattr(self.storage, role)
        if url:
            return url
        base = self.data_dir.resolve()
        defaults = {
            "metadata_url": f"sqlite:///{base / 'metadata.sqlite'}",
            "blob_url": f"file://{base / 'blobs'}",
            "queue_url": f"sqlite:///{base / 'queue.sqlite'}",
            "events_url": f"local://{base / 'events'}",
        }
        return defaults[role]


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Defaults < TOML file < ``MAILFLEET_*`` environment < ``overrides`` (the
    command line). Raises ConfigError listing every bad key."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(Path(config_file).read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{config_file}: no such file"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{config_file}: not valid TOML: {exc}"]) from None
    env_values = _Environment().model_dump(exclude_none=True)
    values = deep_merge(deep_merge(file_values, env_values), overrides or {})
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        ) from None
    problems = []
    for role, schemes in SUPPORTED_SCHEMES.items():
        scheme = settings.storage_url(role).split(":", 1)[0]
        if scheme not in schemes:
            problems.append(f"storage.{role}: scheme {scheme!r}; expected one of {sorted(schemes)}")
    problems.extend(_shard_problems(settings))
    if problems:
        raise ConfigError(problems)
    return settings


def _shard_problems(settings: Settings) -> list[str]:
    shards = settings.storage.metadata_shards
    if not shards:
        return []
    if not settings.storage_url("metadata_url").startswith("postgresql"):
        return ["storage.metadata_shards: shards need a postgresql:// metadata_url"]
    problems = []
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        problems.append(f"storage.metadata_shards: names must differ, got {names}")
    for i, shard in enumerate(shards):
        for key in ("url", "replica_url"):
            value = getattr(shard, key)
            if value and not value.startswith("postgresql"):
                problems.append(f"storage.metadata_shards.{i}.{key}: expected postgresql://")
    return problems


class _Environment(BaseSettings):
    """The ``MAILFLEET_*`` environment alone, loosely typed so that it merges over
    the file and is validated once, with it, by ``Settings``."""

    model_config = SettingsConfigDict(
        env_prefix="MAILFLEET_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: str | None = None
    storage: dict[str, Any] | None = None
    http: dict[str, Any] | None = None
    smtp: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    auth: dict[str, Any] | None = None
    delivery: dict[str, Any] | None = None
    blobs: dict[str, Any] | None = None
    realtime: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    logging: dict[str, Any] | None = None
    domains: list[dict[str, Any]] | None = None
