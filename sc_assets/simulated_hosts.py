"""Several "machines" on one Linux machine, for tests of a distributed deployment.

A test of workers on other hosts must show that they reach the services only over the
network and that nothing passes between them, or between them and the test, through a shared
local folder. Containers would do, but need an engine; this needs only root, iproute2,
util-linux and socat. Each simulated host is:

- a network namespace ``<prefix>-host<k>`` joined to a bridge by a veth pair, with an address
  on a private /24 and a default route via the bridge's address. 127.0.0.1 inside is the host's
  own loopback; a service of the machine that listens on 127.0.0.1 is reachable from the hosts
  at the bridge's address once :meth:`SimulatedHosts.relay` forwards its port (socat). No IP
  forwarding is turned on: the hosts reach the bridge's address and nothing beyond it.
- a mount and UTS namespace, held by one idle process (every process of the host joins it):
  the hostname is the host's name, and the whole file tree is read-only except fresh tmpfs
  mounts on /tmp (``TMPDIR`` and ``HOME``), /var/tmp, /dev/shm and every ``hide`` path, which
  also hide what the machine holds there. So a host writes only to its own memory; what the
  test writes outside those paths (the project folder, say) it can read, read-only, as hosts
  share an image. /etc/hosts names only the host itself and there is no name server, so a
  lookup of another name fails at once instead of waiting on a DNS server it cannot reach.

:meth:`Host.kill` kills every process of a host with SIGKILL, a lost machine; the next
:meth:`Host.popen` boots it again with empty tmpfs mounts. Everything is removed when the
context exits, even after a failure, and what a killed earlier run left behind (the same
prefix, or a default prefix whose process is gone: its hosts' processes, relays, namespaces
and interfaces) is removed when the next one starts.

No Dagster here: the standard library and those commands, as root.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from itertools import count
from pathlib import Path

#: Paths every host gets an empty private tmpfs on (the first is its scratch folder).
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

_COMMANDS = ("ip", "unshare", "nsenter", "socat", "ss")
_DEFAULT_PREFIX = re.compile(r"^sh([0-9a-f]+)x[0-9a-f]+$")  # sh<pid>x<n>, in hex
_instances = count(1)

# Run inside the new mount and UTS namespaces (argv: hostname, private dirs), by the process
# that holds them: everything read-only in one mount_setattr(AT_RECURSIVE) call (/proc
# excepted), the private tmpfs mounts, the host's /etc/hosts and resolv.conf; then it idles.
_BOOT = r"""
import ctypes, json, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")
def mount_setattr(path, attr_set, attr_clr):  # struct mount_attr; MS_PRIVATE propagation
    attr = (ctypes.c_uint64 * 4)(attr_set, attr_clr, 1 << 18, 0)
    check(libc.syscall(442, -100, path.encode(), 0x8000, attr, 32), f"mount_setattr {path}")
name, private, keep, hide = json.loads(sys.argv[1])
socket.sethostname(name)
mount_setattr("/", 1, 0)  # MOUNT_ATTR_RDONLY, recursively
mount_setattr("/proc", 0, 1)
# The image folders under a private dir (a project cloned into /tmp): detached read-only
# copies of their mounts (open_tree), put back at their paths on the private tmpfs below.
kept = [(path, libc.syscall(428, -100, path.encode(), 1 | 0x8000)) for path in keep]
for path, fd in kept:
    if fd < 0:
        check(-1, f"open_tree {path}")
for path in private:
    check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"mode=1777"), f"tmpfs on {path}")
for path, fd in kept:
    os.makedirs(path, exist_ok=True)
    check(libc.syscall(429, fd, b"", -100, path.encode(), 4), f"move_mount {path}")
for path in hide:
    os.makedirs(path, exist_ok=True)
    check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"mode=1777"), f"tmpfs on {path}")
scratch = private[0]
etc = {"hosts": f"127.0.0.1 localhost {name}\n", "resolv.conf": "# no name server\n"}
for file, text in etc.items():
    target = os.path.realpath(f"/etc/{file}")
    if os.path.isfile(target):
        source = os.path.join(scratch, f".{file}")
        with open(source, "w") as f:
            f.write(text)
        check(libc.mount(source.encode(), target.encode(), None, 4096, None), f"bind {target}")
        os.unlink(source)  # the bind mount keeps the file; the scratch folder starts empty
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def image_under_private_dirs() -> list[str]:
    """The folders every host sees as this machine has them ("the image": this package's
    project and the Python environment) that lie under a private dir, e.g. a clone in /tmp:
    hosts see them read-only at their paths, on top of their private tmpfs."""
    image = {Path(__file__).resolve().parent.parent, Path(sys.prefix).resolve()}
    private = [Path(p) for p in PRIVATE_DIRS]
    return sorted(str(p) for p in image if any(p.is_relative_to(d) for d in private))


@functools.cache
def available() -> tuple[bool, str]:
    """Whether simulated hosts can be made here, and if not, why (a reason to skip a test).
    Asked once per process: it makes and removes one host."""
    if os.geteuid() != 0:
        return False, "simulated hosts need root (network and mount namespaces)"
    missing = [c for c in _COMMANDS if shutil.which(c) is None]
    if missing:
        return False, f"simulated hosts need {', '.join(missing)} (iproute2, util-linux, socat)"
    try:  # one host, booted: network and mount namespaces, mount_setattr (Linux >= 5.12)
        with SimulatedHosts(1) as hosts:
            hosts[0].boot()
    except (OSError, RuntimeError) as error:
        return False, f"cannot make a simulated host here: {error}"
    return True, "root, and a simulated host could be made"


class Host:
    """One simulated host: its name (also its hostname and network namespace), its address."""

    def __init__(self, name: str, ip: str, hide: Sequence[str]) -> None:
        self.name, self.ip = name, ip
        self.scratch = Path(PRIVATE_DIRS[0])
        self._hide = list(hide)
        self._holder: subprocess.Popen | None = None

    def popen(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike = "/tmp",
        **kwargs,
    ) -> subprocess.Popen:
        """Start ``argv`` on this host (booting it if needed), in folder ``cwd`` of the host.

        The environment is a fresh host's (``PATH``, ``HOME`` and ``TMPDIR`` = the scratch
        folder, ``HOSTNAME``) plus ``env``: nothing else of the caller's. ``kwargs`` go to
        :class:`subprocess.Popen` (``stdout``, ``stderr``, ``text``...).
        """
        holder = self.boot()
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        base |= {"HOME": str(self.scratch), "TMPDIR": str(self.scratch), "HOSTNAME": self.name}
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        enter = ["nsenter", "-t", str(holder.pid), "-n", "-m", "-u", f"--wdns={cwd}", "--"]
        return subprocess.Popen([*enter, *argv], env={**base, **(env or {})}, **kwargs)

    def run(
        self, argv: Sequence[str], timeout: float = 60, **kwargs
    ) -> subprocess.CompletedProcess:
        """:meth:`popen` waited for; output captured as text unless ``kwargs`` say otherwise."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        process = self.popen(argv, **kwargs)
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def path(self, path: str | os.PathLike) -> Path:
        """Where ``path`` of this host is seen from outside (its mount namespace's root)."""
        return Path(f"/proc/{self.boot().pid}/root") / Path(path).relative_to("/")

    def put(self, path: str | os.PathLike, data: bytes | str) -> Path:
        """Write a file at ``path`` on this host (a private folder, e.g. under the scratch
        folder or a hidden path: a copy deployed to the host, as its code or its config)."""
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        return Path(path)

    def pids(self) -> list[int]:
        """Every process of this host (every process in its network namespace)."""
        listed = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]

    def kill(self) -> None:
        """SIGKILL every process of this host at once, as when the machine is lost. Its tmpfs
        mounts go with them; the next :meth:`popen` boots the host again."""
        _kill_netns(self.name)
        if self._holder is not None:
            self._holder.wait(timeout=10)
            self._holder = None

    def boot(self) -> subprocess.Popen:
        """The process holding this host's mount and UTS namespaces (started if needed)."""
        if self._holder is not None and self._holder.poll() is None:
            return self._holder
        for path in self._hide:  # a mount point must exist; an empty folder hides nothing
            Path(path).mkdir(parents=True, exist_ok=True)
        layout = json.dumps([self.name, PRIVATE_DIRS, image_under_private_dirs(), self._hide])
        argv = ["ip", "netns", "exec", self.name, "unshare", "--mount", "--uts"]
        argv += ["--propagation", "private", sys.executable, "-c", _BOOT, layout]
        holder = subprocess.Popen(
            argv,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if holder.stdout.readline().strip() != "ready":
            holder.kill()
            _, err = holder.communicate()
            raise RuntimeError(f"could not boot simulated host {self.name}: {err.strip()}")
        self._holder = holder
        return holder

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.ip!r})"


class SimulatedHosts:
    """``n`` simulated hosts behind one bridge (see the module's docstring); a context manager.

    ``prefix`` names everything made (``<prefix>-br``, ``<prefix>-v<k>``, ``<prefix>-host<k>``;
    at most 11 characters, as Linux names interfaces with at most 15); the default,
    ``sh<pid>x<n>`` in hex, is unique to this process and instance. ``hide`` lists folders of
    this machine that every host sees empty (created if missing), besides /tmp, /var/tmp and
    /dev/shm, which it always does.
    """

    def __init__(self, n: int = 2, prefix: str | None = None, hide: Iterable[str] = ()) -> None:
        self.prefix = prefix or f"sh{os.getpid():x}x{next(_instances) % 256:x}"
        if not re.fullmatch(r"[a-z][a-z0-9]{0,10}", self.prefix) or not 1 <= n <= 99:
            raise ValueError(f"prefix {self.prefix!r} (a-z0-9, <= 11) or n={n} (1-99) not usable")
        self.n, self.hide = n, [str(Path(p).resolve()) for p in hide]
        self.bridge = f"{self.prefix}-br"
        self.bridge_ip = ""
        self.hosts: list[Host] = []
        self._relays: dict[int, subprocess.Popen] = {}

    def __enter__(self) -> SimulatedHosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getitem__(self, k: int) -> Host:
        return self.hosts[k]

    def _create(self) -> None:
        _remove_stale(self.prefix)
        network = _free_subnet(self.prefix)
        addresses = [str(a) for a in network.hosts()]
        self.bridge_ip = addresses[0]
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for k in range(1, self.n + 1):
            name, veth, ip = f"{self.prefix}-host{k}", f"{self.prefix}-v{k}", addresses[k]
            _ip("netns", "add", name)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "route", "add", "default", "via", self.bridge_ip)
            self.hosts.append(Host(name, ip, self.hide))

    def relay(self, port: int, timeout: float = 10) -> None:
        """Make 127.0.0.1:``port`` of this machine reachable from the hosts at
        ``bridge_ip:port`` (socat, one forked relay per connection)."""
        listen = f"TCP-LISTEN:{port},bind={self.bridge_ip},reuseaddr,fork"
        self._relays[port] = subprocess.Popen(
            ["socat", listen, f"TCP:127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its forked relays are stopped with it, as a group
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.bridge_ip, port):
            if self._relays[port].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat could not listen on {self.bridge_ip}:{port}")
            time.sleep(0.05)

    def close(self) -> None:
        """Remove everything: processes of the hosts, relays, namespaces, interfaces."""
        for host in self.hosts:
            host.kill()
        self.hosts = []
        for relay in self._relays.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(relay.pid, signal.SIGKILL)
            relay.wait()
        self._relays.clear()
        _remove(self.prefix)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _listening(ip: str, port: int) -> bool:
    listed = subprocess.run(["ss", "-Hltn", f"src {ip}:{port}"], capture_output=True, text=True)
    return bool(listed.stdout.strip())


def _free_subnet(seed: str) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/12 that no address or route of this machine overlaps; where the
    search starts depends on ``seed``, so two instances rarely even try the same one."""
    shown = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_interface(a).network for a in re.findall(r"inet (\S+)", shown)]
    used += [ipaddress.ip_network(r) for r in re.findall(r"^(\d[\d./]*)", routes, re.M)]
    start = zlib.crc32(seed.encode())
    for i in range(4096):
        n = (start + i) % 4096
        network = ipaddress.ip_network(f"10.{200 + n // 256}.{n % 256}.0/24")
        if not any(network.overlaps(u) for u in used):
            return network
    raise RuntimeError("no free /24 in 10.200.0.0/12 for simulated hosts")


def _kill_netns(netns: str) -> None:
    """SIGKILL every process in network namespace ``netns``, until none is left."""
    for _ in range(100):
        listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        pids = [int(pid) for pid in listed.stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    raise RuntimeError(f"processes of {netns} survive SIGKILL")


def _remove(prefix: str) -> None:
    """Remove whatever ``prefix`` names: the hosts' processes and namespaces, the relays
    bound to its bridge's address (found by their command line), its interfaces."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for netns in re.findall(rf"^({re.escape(prefix)}-host\d+)\b", listed, re.M):
        _kill_netns(netns)
    links = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    for ip in re.findall(rf"^\d+: {re.escape(prefix)}-br\s+inet ([\d.]+)/", links.stdout, re.M):
        _kill_relays(ip)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for link in re.findall(rf"^\d+: ({re.escape(prefix)}-(?:br|v\d+))[@:]", links, re.M):
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    for netns in re.findall(rf"^({re.escape(prefix)}-host\d+)\b", listed, re.M):
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _kill_relays(bridge_ip: str) -> None:
    """SIGKILL the socat relays (and their forks) listening on ``bridge_ip``."""
    bind = f"bind={bridge_ip},".encode()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"socat") and any(bind in arg for arg in argv):
                os.kill(int(proc.name), signal.SIGKILL)


def _remove_stale(prefix: str) -> None:
    """Remove what an earlier run left: the same prefix, or a default prefix (``sh<pid>x<n>``)
    whose process is gone."""
    listed = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    listed += subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    stale = {prefix}
    for name in set(re.findall(r"\b(sh[0-9a-f]+x[0-9a-f]+)-(?:br|v\d+|host\d+)\b", listed)):
        if not Path(f"/proc/{int(_DEFAULT_PREFIX.match(name)[1], 16)}").exists():
            stale.add(name)
    for name in stale:
        _remove(name)
