"""A bounded brute-force attack on code redemption, on loopback, against a release hub.

1. Rate limit (default configuration): 8 threads from one address post random, well-formed codes
   to /api/v1/redeem for DURATION seconds. Counted: answers that were checked (401) and answers
   refused by the per-address limit (429). The checked ones per minute are the attacker's rate.
2. Lockout (rate limit lifted, so only the per-code counter acts): wrong answers to one real code
   until it locks; then the right answer, which must be refused while locked; then staff unlock
   and the right answer works.
3. Timing classes (rate limit lifted): the latency of unknown codes, wrong answers to real codes
   (before they lock), locked codes and right answers, N samples each, interleaved. Unknown, wrong
   and locked must not be told apart (one argon2 verification each, the same 401 body).

  python3 bench/redeem_attack.py [DURATION] [SAMPLES]   (after `cargo build --release -p ferry-hub`)
"""
import concurrent.futures
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import start_ferry  # noqa: E402

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK = ALPHABET + "*~$=U"


def random_code():
    """11 random Crockford symbols and the mod-37 check symbol, as XXXX-XXXX-XXXX."""
    while True:
        body = "".join(random.choice(ALPHABET) for _ in range(11))
        value = 0
        for c in body:
            value = value * 32 + ALPHABET.index(c)
        check = value % 37
        if check < 32:  # the hub never issues codes whose check symbol is not a letter or digit
            s = body + CHECK[check]
            return f"{s[0:4]}-{s[4:8]}-{s[8:12]}"


def pydicom_file():
    from pydicom.data import get_testdata_file
    return open(get_testdata_file("CT_small.dcm"), "rb").read()


def make_shares(base, h, n):
    """n shares of one small study each (birth date 19700101); returns their codes and ids."""
    body = pydicom_file()
    out = []
    for _ in range(n):
        draft = requests.post(f"{base}/api/v1/shares", headers=h, json={"community": "aTck"}).json()
        r = requests.post(f"{base}/api/v1/shares/{draft['id']}/files", headers=dict(h, **{"content-type": "application/dicom"}), data=body)
        assert r.status_code == 200, r.text
        issued = requests.post(f"{base}/api/v1/shares/{draft['id']}/issue", headers=h, json={"birth_date": "19700101"}).json()
        out.append((issued["code"], draft["id"]))
    return out


def hub(tmp, name, env):
    old = dict(os.environ)
    os.environ.update(env)
    try:
        server = start_ferry(os.path.join(tmp, name))
    finally:
        os.environ.clear()
        os.environ.update(old)
    base = server.base.rsplit("/dicomweb", 1)[0]
    r = requests.post(f"{base}/api/v1/communities", headers=server.headers, json={"name": "Attack Klinik", "code": "aTck", "city": "X"})
    assert r.status_code == 201, r.text
    return server, base


def attack_rate(base, duration):
    counts = {}
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def worker():
        s = requests.Session()
        while time.monotonic() < stop:
            try:
                st = s.post(f"{base}/api/v1/redeem", json={"code": random_code(), "answer": "19700101"}).status_code
            except requests.ConnectionError:
                # hyper closes a keep-alive connection now and then under this flood; a new one
                # is opened, as any client would.
                st = "connection closed"
                s = requests.Session()
            with lock:
                counts[st] = counts.get(st, 0) + 1

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for f in [ex.submit(worker) for _ in range(8)]:
            f.result()
    return counts


def lockout(base, h, code, share_id):
    seq = []
    for _ in range(7):
        seq.append(requests.post(f"{base}/api/v1/redeem", json={"code": code, "answer": "19991231"}).status_code)
    right_while_locked = requests.post(f"{base}/api/v1/redeem", json={"code": code, "answer": "19700101"}).status_code
    state = requests.get(f"{base}/api/v1/shares/{share_id}", headers=h).json()
    assert requests.post(f"{base}/api/v1/shares/{share_id}/unlock", headers=h).status_code in (200, 204)
    right_after_unlock = requests.post(f"{base}/api/v1/redeem", json={"code": code, "answer": "19700101"}).status_code
    return seq, right_while_locked, state, right_after_unlock


def timing(base, shares, locked_code, samples):
    """Latency per class, interleaved so drift hits every class alike."""
    wrong_budget = {c: 4 for c, _ in shares}  # the 5th wrong answer locks a code
    classes = {"unknown code": [], "wrong answer": [], "locked code": [], "right answer": []}
    bodies = {}
    s = requests.Session()
    codes = [c for c, _ in shares]
    for i in range(samples):
        for cls in classes:
            if cls == "unknown code":
                code, answer = random_code(), "19700101"
            elif cls == "wrong answer":
                code = next((c for c in codes if wrong_budget[c] > 0), None)
                if code is None:
                    continue
                wrong_budget[code] -= 1
                answer = "19991231"
            elif cls == "locked code":
                code, answer = locked_code, "19991231"
            else:
                code, answer = codes[i % len(codes)], "19700101"
            t0 = time.perf_counter()
            r = s.post(f"{base}/api/v1/redeem", json={"code": code, "answer": answer})
            classes[cls].append((time.perf_counter() - t0) * 1000)
            if cls != "right answer":
                assert r.status_code == 401, (cls, r.status_code)
                body = r.json()
                body.pop("request_id", None)  # differs per request, by design
                bodies.setdefault(cls, json.dumps(body, sort_keys=True))
            else:
                assert r.status_code == 200, r.text
                s.cookies.clear()
    return classes, bodies


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main(duration, samples):
    with tempfile.TemporaryDirectory() as tmp:
        print(f"1. rate limit, default configuration, 8 threads from 127.0.0.1 for {duration} s")
        server, base = hub(tmp, "limited", {})
        try:
            counts = attack_rate(base, duration)
        finally:
            server.stop()
        checked = counts.get(401, 0)
        print(f"   answers: {dict(sorted(counts.items(), key=str))}")
        print(f"   checked guesses: {checked} in {duration} s = {checked * 60 / duration:.1f} per minute (the limit: a burst of 10, then 10 per minute)")

        server, base = hub(tmp, "open", {"FERRY_SHARES__RATE_BURST": "1000000"})
        try:
            h = server.headers
            n = max(2, samples // 4 + 2)
            shares = make_shares(base, h, n)
            (lock_code, lock_id) = shares.pop()
            print("2. lockout of one code (rate limit lifted)")
            seq, while_locked, st, after = lockout(base, h, lock_code, lock_id)
            print(f"   wrong answers 1-7: {seq}; right answer while locked: {while_locked}; staff see failed_attempts={st.get('failed_attempts')} locked={st.get('locked')}; right answer after unlock: {after}")
            for _ in range(5):  # lock it again for the timing class "locked code"
                requests.post(f"{base}/api/v1/redeem", json={"code": lock_code, "answer": "19991231"})
            print(f"3. timing classes, {samples} samples each (ms)")
            classes, bodies = timing(base, shares, lock_code, samples)
            for cls, xs in classes.items():
                print(f"   {cls:13s} n={len(xs):3d}  p10 {q(xs, 0.1):6.1f}  median {statistics.median(xs):6.1f}  p90 {q(xs, 0.9):6.1f}")
            same = len(set(bodies.values())) == 1
            print(f"   401 bodies identical across unknown/wrong/locked (request_id aside): {same}")
        finally:
            server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60, int(sys.argv[2]) if len(sys.argv) > 2 else 80)
