"""Directory search at scale: 10,000 synthetic communities, then 300 searches of the kinds people
type (umlaut-folded words, prefixes in any order, a typo, a code); prints p50/p99.

  python3 bench/directory.py        (after `cargo build --release -p ferry-hub`)
"""
import os
import random
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import TOKEN, pct, start_ferry  # noqa: E402

CITIES = ["Saarbrücken", "Homburg", "Saarlouis", "Neunkirchen", "Völklingen", "München", "Köln", "Düsseldorf", "Würzburg", "Lübeck", "Göttingen", "Straßburg"]
KINDS = ["Radiologie", "Nuklearmedizin", "Kardiologie", "Praxis für Orthopädie", "Gemeinschaftspraxis Radiologie", "Klinikum", "Universitätsklinikum", "MVZ Bildgebung", "Strahlentherapie"]
QUERIES = ["saarbruecken", "radiolo saar", "saar radiolo", "muenchen klinikum", "Saarbrüken", "nuklear koeln", "universitaetsklinikum", "praxis orthop", "strahlen voelkl"]


def main(n=10_000):
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        hub = start_ferry(tmp)
        try:
            base = hub.base
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {TOKEN}"
            codes = []
            t0 = time.perf_counter()
            for i in range(n):
                name = f"{rng.choice(KINDS)} {rng.choice(['Nord', 'Süd', 'Mitte', 'am Park', 'Dr. Groß', 'Dr. Jäger'])} {i}"
                r = s.post(f"{base}/api/v1/communities", json={"name": name, "city": rng.choice(CITIES)})
                r.raise_for_status()
                codes.append(r.json()["code"])
            created = time.perf_counter() - t0
            lat = []
            for i in range(300):
                q = QUERIES[i % len(QUERIES)] if i % 10 else rng.choice(codes)
                t = time.perf_counter()
                r = s.get(f"{base}/api/v1/communities", params={"q": q, "limit": 20})
                lat.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            print(f"{n} communities created in {created:.1f} s; search p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, mean {statistics.mean(lat):.1f} ms")
        finally:
            hub.stop()


if __name__ == "__main__":
    main()
