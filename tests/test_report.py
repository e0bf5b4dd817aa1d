"""scripts/report.py: the result tables in README.md and docs/ are rendered from the committed JSON."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "report.py"


def _report():
    return load_script("report")


def test_committed_tables_match_their_json():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("renderer, json_file", [("speed_table", "2cpu-quiet-default-threads.json"),
                                                  ("recipe_table", "strong-recipe-3seeds-peers-2cpu.json")])
def test_a_table_renders_what_the_benchmark_printed(renderer, json_file):
    # The benchmark stored its own markdown beside the numbers: the docs' renderer, the one the
    # benchmark printed with (bench/tables.py), gives the same table.
    data = json.loads((ROOT / "docs/benchmarks" / json_file).read_text())
    lines = getattr(_report(), renderer)(data)
    assert len(lines) == 2 + len(data["summary"])
    printed = data["markdown"].splitlines()
    start = printed.index(lines[0])
    assert printed[start:start + len(lines)] == lines


def test_speed_table_rows():
    report = _report()
    data = {"summary": [
        {"backend": "torch", "loop": "reference", "batch_size": 32, "samples_per_s": 16995.6,
         "samples_per_cpu_s": 8545.1, "peak_rss_mb": 584.6, "ratio": 1.0, "cpu_ratio": 1.0},
        {"backend": "jax", "loop": "native", "batch_size": 32, "samples_per_s": None, "error": "timed out"},
        {"backend": "tensorflow", "loop": "fit", "batch_size": 64, "samples_per_s": 1234.4,
         "samples_per_cpu_s": 999.9, "peak_rss_mb": 1288.9, "ratio": None, "cpu_ratio": 0.5},
    ]}
    assert report.speed_table(data)[2:] == [
        "| 32 | plain PyTorch (reference) | - | 16,996 | 1.00x | 8,545 | 1.00x | 585 |",
        "| 32 | jax | native | error: timed out | | | | |",
        "| 64 | tensorflow | fit | 1,234 | n/a (no reference) | 1,000 | 0.50x | 1,289 |",
    ]


def test_write_then_check(tmp_path):
    # --write fills an emptied block back in; --check then passes, and fails on a hand edit.
    report = _report()
    for md, _, sources, _ in report.TABLES:
        for src in (sources,) if isinstance(sources, str) else sources:
            (tmp_path / src).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / src).write_bytes((ROOT / src).read_bytes())
        (tmp_path / md).parent.mkdir(parents=True, exist_ok=True)
        names = [n for m, n, _, _ in report.TABLES if m == md]
        (tmp_path / md).write_text("".join(f"<!-- report:{n} -->\nstale\n<!-- /report -->\n" for n in names))
    assert report.main(["--check", "--root", str(tmp_path)]) == 1
    assert report.main(["--write", "--root", str(tmp_path)]) == 0
    assert report.main(["--check", "--root", str(tmp_path)]) == 0
    md = tmp_path / report.TABLES[0][0]
    md.write_text(md.read_text().replace("| 32 |", "| 33 |", 1))
    assert report.main(["--check", "--root", str(tmp_path)]) == 1


def test_every_benchmark_file_is_cited_and_every_citation_exists():
    """docs/benchmarks holds the JSON files README.md and docs/*.md cite, no more: a file nothing
    cites fails, and so does a citation of a file that is not there. A citation is a path
    docs/benchmarks/NAME.json, or docs/benchmarks/{NAME, NAME}.json for several."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    cited = set(re.findall(r"docs/benchmarks/([\w.-]+\.json)", text))
    for group in re.findall(r"docs/benchmarks/\{([^}]*)\}\.json", text):
        cited |= {name.strip() + ".json" for name in group.split(",")}
    present = {p.name for p in (ROOT / "docs" / "benchmarks").glob("*.json")}
    assert not present - cited, f"in docs/benchmarks but cited nowhere: {sorted(present - cited)}"
    assert not cited - present, f"cited but missing from docs/benchmarks: {sorted(cited - present)}"
