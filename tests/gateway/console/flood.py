"""A sign-in flood at a running console, in a process of its own (so that the flood's own threads do
not slow the test's measurements through the test process's GIL):

    python -m tests.gateway.console.flood URL CA SECONDS ADDRESS[,ADDRESS...] THREADS_PER_ADDRESS

It floods for SECONDS at most, or until a line (or the end) comes on its standard input: the test
says when it has measured what it measures under the flood, and waits no longer than that. Each thread signs in over and over from its address (a loopback address of its own), with an
officer id of its own (``ghost-N``, which does not exist) or, every fourth thread, a real one
(``bob``), a wrong password and a wrong code, as fast as the console answers. At the end it prints
one JSON line: how many answers of each status it had."""

from __future__ import annotations

import collections
import json
import re
import sys
import threading
import time

MIN_ANSWERS_PER_THREAD = 4  # the test asks for more than 3 a thread: proof that it flooded

import requests

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class FromAddress(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections come from ``source`` (any 127.x.y.z routes to lo)."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def attacker(url: str, ca: str, source: str, officer_id: str, stop: "Deadline", answers: collections.Counter,
             lock: threading.Lock) -> None:
    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    session.mount("https://", FromAddress(source))
    token = None
    while stop.left() > 0:
        try:
            if token is None:
                token = CSRF.search(session.get(f"{url}/login", timeout=60).text).group(1)
            status = session.post(f"{url}/login", headers={"Referer": f"{url}/login"}, timeout=60,
                                  data={"csrf_token": token, "officer": officer_id,
                                        "password": "not the password at all", "code": "000000"}).status_code
        except (requests.RequestException, AttributeError):
            status, token = "error", None
        with lock:
            answers[str(status)] += 1


class Deadline:
    """The end of the flood: SECONDS from the start, or sooner when told on standard input, but not
    before every thread has had at least ``MIN_ANSWERS_PER_THREAD`` answers on average (on a loaded
    machine the few seconds the test measures in may hold fewer: the test checks that it flooded)."""

    def __init__(self, seconds: float, answers: collections.Counter, threads: int):
        self.at = time.monotonic() + seconds
        self.told = False
        self.answers, self.enough = answers, MIN_ANSWERS_PER_THREAD * threads

    def stop_when_told(self) -> None:
        sys.stdin.readline()  # a line, or the end of the input: the test has what it came for
        self.told = True

    def left(self) -> float:
        remaining = self.at - time.monotonic()
        if self.told and sum(self.answers.values()) > self.enough:
            return min(remaining, 0.0)
        return remaining


def main(argv: list[str]) -> None:
    url, ca, seconds, addresses, per_address = argv
    answers: collections.Counter = collections.Counter()
    stop = Deadline(float(seconds), answers, len(addresses.split(",")) * int(per_address))
    lock = threading.Lock()
    threads = []
    for n, source in enumerate(a for a in addresses.split(",") for _ in range(int(per_address))):
        officer_id = "bob" if n % 4 == 3 else f"ghost-{n}"
        threads.append(threading.Thread(target=attacker, args=(url, ca, source, officer_id, stop, answers, lock),
                                        daemon=True))
    for thread in threads:
        thread.start()
    threading.Thread(target=stop.stop_when_told, daemon=True).start()
    print("started", flush=True)
    for thread in threads:
        thread.join(max(0.0, stop.left()) + 70)
    print(json.dumps(dict(answers)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
