"""Import of a generated 17,000-row domain CSV (`kesu domains import`'s code path) on SQLite.

Prints the time to import (parse + validate + bulk upsert), the time of a second import of the
same file (every row an update), and the ratio against a baseline measured in the same run:
the csv module merely parsing the same file. Run:  .venv/bin/python bench/bench_domains_import.py [ROWS]
"""
import csv
import io
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

KINDS = ("tube", "forum", "imageboard", "blog", "sns", "cyberlocker", "aggregator")
COUNTRIES = ("JP", "US", "NL", "DE", "RU", "SG", "HK", "FR", "CA", "GB")


def generate(rows: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["domain", "site name", "kind", "country", "language", "contact email", "contact form URL",
                "hosting provider", "notes"])
    for i in range(rows):
        d = f"site{i:05d}-{rng.randrange(10**6):06d}.example"
        w.writerow([d, f"サイト {i}", rng.choice(KINDS), rng.choice(COUNTRIES), rng.choice(("ja", "en", "zh")),
                    f"abuse@{d}" if rng.random() < 0.7 else "", f"https://{d}/contact" if rng.random() < 0.4 else "",
                    f"Hosting {rng.randrange(300)}", "生成されたテスト行" if rng.random() < 0.1 else ""])
    return buf.getvalue().encode("utf-8")


def main(rows: int = 17000) -> None:
    from conftest import make_instance

    from backoffice.domains import import_csv
    data = generate(rows)
    with tempfile.TemporaryDirectory() as tmp:
        inst = make_instance(Path(tmp) / "instance", f"sqlite:///{tmp}/kesu.db")
        t0 = time.perf_counter()
        parsed = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        baseline = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = import_csv(inst, data)
        t_insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = import_csv(inst, data)
        t_update = time.perf_counter() - t0
    assert first.inserted == rows and second.updated == rows and parsed == rows + 1
    print(f"rows: {rows} ({len(data) / 1e6:.1f} MB UTF-8)")
    print(f"baseline, csv module parsing only: {baseline:.3f} s")
    print(f"import, all new rows:              {t_insert:.3f} s  ({t_insert / baseline:.1f}x baseline, "
          f"{rows / t_insert:,.0f} rows/s)")
    print(f"import again, all updates:         {t_update:.3f} s  ({t_update / baseline:.1f}x baseline)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 17000)
