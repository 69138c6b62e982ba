"""Remote-HSM experiments: flask_oauth_hsm.hsm.HSM through p11-kit-client.so (tests/ha_support.py).

* ``throughput``: ES256 signatures per second, local SoftHSM vs remote, 1/2/4/8 threads, with the
  pool sized to the threads and with a pool of 2;
* ``kill``: 4 threads signing; the server (and its per-connection processes) SIGKILLed, restarted
  2 s later: errors seen, time to the first success after the restart;
* ``stop``: 4 threads signing; the server SIGSTOPped for 2 s: do calls block, how long, errors.

    .venv/bin/python bench/ha_remote_hsm.py [experiment ...]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import ha_support  # noqa: E402
import support  # noqa: E402

BASE = Path(tempfile.mkdtemp(prefix="ha-hsm-"))
os.environ["SOFTHSM2_CONF"] = str(support.write_softhsm_conf(BASE / "softhsm"))
TOKEN = "remote-bench"


def make_hsm(module: str, pool_size: int, reconnect_backoff: float = 0.2):
    from flask_oauth_hsm.hsm import HSM, HSMConfig

    return HSM(
        HSMConfig(
            module=module,
            token_label=TOKEN,
            pin=support.USER_PIN,
            pool_size=pool_size,
            pool_timeout=2.0,
            reconnect_backoff=reconnect_backoff,
        )
    )


def signs_per_second(key, threads: int, seconds: float = 2.0) -> float:
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def work(i):
        while time.monotonic() < stop:
            key.sign(b"x" * 200)
            counts[i] += 1

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return round(sum(counts) / seconds)


def exp_throughput(server) -> dict:
    from flask_oauth_hsm.hsm import module as H

    out = {}
    for name, module in (("local", support.SOFTHSM_MODULE), ("remote", ha_support.P11KIT_CLIENT_MODULE)):
        for threads in (1, 2, 4, 8):
            for pool in sorted({threads, 2}):
                if pool > threads:
                    continue
                H._modules.clear()
                hsm = make_hsm(module, pool)
                key = hsm.key("es256")
                key.sign(b"warm")
                out[f"{name} threads={threads} pool={pool}"] = signs_per_second(key, threads)
                hsm.close()
    return out


class Load:
    def __init__(self, key, threads: int = 4):
        self.key = key
        self.rows: list[tuple[float, str, float]] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.done.is_set():
            t0 = time.monotonic()
            try:
                self.key.sign(b"payload")
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001
                outcome = f"{type(exc).__name__}: {exc}"
            self.rows.append((t0, outcome, time.monotonic() - t0))
            time.sleep(0.001)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for t in self.threads:
            t.join(30)

    def summary(self, fault_at: float, recovered_from: float) -> dict:
        after = [r for r in self.rows if r[0] >= fault_at]
        kinds: dict[str, int] = {}
        for _, outcome, _ in after:
            if outcome != "ok":
                kinds[outcome] = kinds.get(outcome, 0) + 1
        first_ok = next((r[0] + r[2] for r in sorted(self.rows) if r[0] >= recovered_from and r[1] == "ok"), None)
        durations = sorted(d for t, _, d in after)
        return {
            "calls_after_fault": len(after),
            "errors": kinds,
            "first_success_after_restart_s": None if first_ok is None else round(first_ok - recovered_from, 3),
            "call_ms_max": round(max(durations, default=0) * 1000, 1),
            "call_ms_p50": round(statistics.median(durations) * 1000, 2) if durations else None,
        }


def exp_kill(server) -> dict:
    hsm = make_hsm(ha_support.P11KIT_CLIENT_MODULE, 4)
    key = hsm.key("es256")
    key.sign(b"warm")
    with Load(key) as load:
        time.sleep(0.5)
        fault_at = time.monotonic()
        server.kill()
        time.sleep(2)
        restart_at = time.monotonic()
        server.start()
        time.sleep(3)
    result = load.summary(fault_at, restart_at)
    try:
        hsm.check()
        result["ready_after"] = "ok"
    except Exception as exc:  # noqa: BLE001
        result["ready_after"] = f"{type(exc).__name__}: {exc}"
    hsm.close()
    return result


def exp_stop(server) -> dict:
    hsm = make_hsm(ha_support.P11KIT_CLIENT_MODULE, 4)
    key = hsm.key("es256")
    key.sign(b"warm")
    with Load(key, threads=8) as load:
        time.sleep(0.5)
        fault_at = time.monotonic()
        server.pause()
        time.sleep(2)
        resume_at = time.monotonic()
        server.resume()
        time.sleep(2)
    result = load.summary(fault_at, resume_at)
    stalled = [r for r in load.rows if fault_at <= r[0] < resume_at]
    result["calls_started_while_stopped"] = len(stalled)
    result["max_wait_of_those_s"] = round(max((r[2] for r in stalled), default=0), 2)
    hsm.close()
    return result


def main(argv: list[str]) -> None:
    names = [a for a in argv if not a.startswith("--")] or ["throughput", "kill", "stop"]
    support.init_token(TOKEN)
    server = ha_support.P11KitServer(BASE / "p11kit", os.environ["SOFTHSM2_CONF"], TOKEN)
    server.start()
    os.environ["P11_KIT_SERVER_ADDRESS"] = server.address
    try:
        local = make_hsm(support.SOFTHSM_MODULE, 2)
        local.generate_key("ES256", "sig", "es256")
        local.close()
        from flask_oauth_hsm.hsm import module as H

        H._modules.clear()
        for name in names:
            t0 = time.monotonic()
            result = {"throughput": exp_throughput, "kill": exp_kill, "stop": exp_stop}[name](server)
            print(json.dumps({"experiment": name, "seconds": round(time.monotonic() - t0, 1), "result": result}), flush=True)
    finally:
        server.stop()
        shutil.rmtree(BASE, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
