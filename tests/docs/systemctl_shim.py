#!/usr/bin/env python3
"""A stand-in for `systemctl` where there is no systemd (tests/docs/test_operations.py): it does what
the installed unit files in /etc/systemd/system say, for the verbs docs/operations.md's one-box
section uses. A service: its ExecStartPre lines in the foreground, then ExecStart (Type=simple: in
the background under a small supervisor that passes signals on and restarts it on failure; Type=oneshot: in the foreground, then ExecStartPost), each as the
unit's User= with only its EnvironmentFile= (plus PATH and LANG, as systemd gives) and its UMask=.
A timer: enabled and started, nothing run (a timer's service is run with `start NAME.service`).
`stop` sends KillSignal (SIGTERM) and waits, `reload` sends SIGHUP (the units' ExecReload), `is-active`
says whether the process lives. What it does not do: the sandboxing lines (ProtectSystem= and the
rest), dependencies between units; `systemd-analyze verify` checks the units themselves
(tests/test_deploy.py)."""

import configparser
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

UNITS = Path("/etc/systemd/system")
STATE = Path(os.environ.get("SYSTEMCTL_SHIM_STATE", "/run/systemctl-shim"))


def unit(name: str) -> configparser.ConfigParser:
    """The unit file, an instance's template with %i replaced, then its drop-ins (NAME.d/*.conf):
    a drop-in's Environment= lines are added to the unit's."""
    if "." not in name:
        name += ".service"
    stem, _, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    path = UNITS / (f"{prefix}@.{suffix}" if at else name)
    if not path.exists():
        sys.exit(f"Failed to start {name}: Unit {name} not found.")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text().replace("%i", instance))
    for drop_in in sorted((UNITS / f"{name}.d").glob("*.conf")):
        extra = configparser.ConfigParser(strict=False, interpolation=None)
        extra.optionxform = str
        extra.read(drop_in)
        if extra.has_option("Service", "Environment"):
            before = parser["Service"].get("Environment", "")
            parser["Service"]["Environment"] = f"{before}\n{extra['Service']['Environment']}".strip()
    return parser


def environment(service: configparser.SectionProxy) -> dict:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    user = service.get("User")
    if user:
        entry = pwd.getpwnam(user)
        env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
    for item in service.get("EnvironmentFile", "").split():
        path = Path(item.lstrip("-"))
        if not path.exists() and item.startswith("-"):
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    for line in service.get("Environment", "").splitlines():
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def launcher(service: configparser.SectionProxy, new_session: bool = True):
    """As the unit's User= and UMask=; a service's main process stays in its supervisor's process
    group (new_session=False), which stands in for the unit's cgroup: `stop` ends the whole group."""
    user, umask = service.get("User"), int(service.get("UMask", "0022"), 8)

    def become():
        if new_session:
            os.setsid()
        os.umask(umask)
        if user:
            entry = pwd.getpwnam(user)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
    return become


def command(line: str) -> list[str]:
    return shlex.split(line.lstrip("-@+!"))


def run(service, key: str) -> None:
    for line in service.get(key, "").splitlines():
        if line.strip():
            code = subprocess.run(command(line), env=environment(service), preexec_fn=launcher(service),
                                  cwd="/").returncode
            if code != 0 and not line.startswith("-"):
                sys.exit(f"{key}={line} failed with exit code {code}")


def pidfile(name: str) -> Path:
    return STATE / f"{name}.pid"


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a parent that is not us to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def alive(name: str) -> bool:
    try:
        return running(int(pidfile(name).read_text()))
    except (FileNotFoundError, ValueError):
        return False


def start(name: str) -> None:
    if name.endswith(".timer"):
        (STATE / name).touch()
        return
    name = name if name.endswith(".service") else name + ".service"
    if alive(name):
        return
    service = unit(name)["Service"]
    run(service, "ExecStartPre")
    if service.get("Type", "simple") == "oneshot":
        run(service, "ExecStart")
        run(service, "ExecStartPost")
        return
    log = open(STATE / f"{name}.log", "ab")
    supervisor = subprocess.Popen([sys.executable, __file__, "_supervise", name], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd="/", start_new_session=True)
    pidfile(name).write_text(str(supervisor.pid))


def supervise(name: str) -> int:
    """What systemd does for a running Type=simple service: signals passed on (stop: KillSignal,
    reload: ExecReload's SIGHUP), and Restart=on-failure after RestartSec=, said in the log."""
    service = unit(name)["Service"]
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = stopping or signum == signal.SIGTERM
        if process.poll() is None:
            os.kill(process.pid, signum)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    while True:
        process = subprocess.Popen(command(service["ExecStart"]), env=environment(service),
                                   preexec_fn=launcher(service, new_session=False), stdin=subprocess.DEVNULL, cwd="/")
        code = process.wait()
        if stopping or code == 0 or service.get("Restart") != "on-failure":
            return code
        print(f"systemctl (stand-in): {name} exited with {code}; restarting (Restart=on-failure)", flush=True)
        time.sleep(float(service.get("RestartSec", "0.1")))
        run(service, "ExecStartPre")


def group(pgid: int) -> list[int]:
    """The live processes of a process group (this namespace's /proc: the test mounts its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def stop(name: str) -> None:
    """KillSignal (SIGTERM) to every process of the service (its process group, as systemd's
    KillMode=control-group), wait for all of them to end, SIGKILL after TimeoutStopSec (30 s). A
    pidfile whose process is gone is a failure: the service died without systemctl knowing."""
    name = name if "." in name else name + ".service"
    if not pidfile(name).exists():
        return
    pid = int(pidfile(name).read_text())
    if not running(pid):
        pidfile(name).unlink()
        sys.exit(f"systemctl (stand-in): {name}: its process {pid} is gone (died without systemctl)")
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while group(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group(pid):
        print(f"systemctl (stand-in): {name} still running after 30 s: SIGKILL", file=sys.stderr)
        os.killpg(pid, signal.SIGKILL)
        while group(pid):
            time.sleep(0.1)
    pidfile(name).unlink()


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    if argv[0] == "_supervise":
        return supervise(argv[1])
    verb, names = argv[0], [a for a in argv[1:] if not a.startswith("-")]
    if verb == "daemon-reload":
        return 0
    if verb == "enable":
        for name in names:
            (STATE / f"{name}.enabled").touch()
            if "--now" in argv:
                start(name)
        return 0
    actions = {"start": [start], "stop": [stop], "restart": [stop, start],
               "reload": [lambda n: os.kill(int(pidfile(n if "." in n else n + ".service").read_text()), signal.SIGHUP)]}
    if verb in actions:
        for name in names:
            for action in actions[verb]:
                action(name)
        return 0
    if verb == "is-active":
        active = all(alive(n if "." in n else n + ".service") for n in names)
        print("active" if active else "inactive")
        return 0 if active else 3
    sys.exit(f"systemctl (the test's stand-in): {verb} is not done here")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
