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


def _checkout(tmp_path):
    """A copy of what scripts/report.py reads and writes: the markdown files, the JSON, the plots."""
    for pattern in ("README.md", "docs/*.md", "docs/benchmarks/*.json", "docs/results/*.json", "docs/plots/*.png"):
        for src in ROOT.glob(pattern):
            dst = tmp_path / src.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    return tmp_path


def test_write_then_check(tmp_path):
    # --write fills emptied blocks and figures back in; --check then passes, and fails on a hand edit.
    report = _report()
    root = _checkout(tmp_path)
    for md in {spec[0] for spec in report.TABLES + report.FIGURES}:
        tables = [n for m, n, _, _ in report.TABLES if m == md]
        figures = [n for m, n, _, _ in report.FIGURES if m == md]
        (root / md).write_text("".join(f"<!-- report:{n} -->\nstale\n<!-- /report -->\n" for n in tables)
                               + "".join(f"It is <!-- fig:{n} -->stale<!-- /fig -->.\n" for n in figures))
    assert report.main(["--check", "--root", str(root)]) == 1
    assert report.main(["--write", "--root", str(root)]) == 0
    assert report.main(["--check", "--root", str(root)]) == 0
    md = root / report.TABLES[0][0]
    md.write_text(md.read_text().replace("| 32 |", "| 33 |", 1))
    assert report.main(["--check", "--root", str(root)]) == 1


def test_a_wrong_prose_figure_fails_the_check(tmp_path, capsys):
    # The README's old fast range, which left out jax's 99.31%.
    report = _report()
    root = _checkout(tmp_path)
    assert report.main(["--check", "--root", str(root)]) == 0
    readme = root / "README.md"
    text = readme.read_text()
    right = "<!-- fig:fast-accuracy -->99.24-99.31%<!-- /fig -->"
    assert right in text
    readme.write_text(text.replace(right, right.replace("99.31", "99.30")))
    capsys.readouterr()
    assert report.main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr()
    assert any(line.startswith("+") and right in line for line in out.out.splitlines()), out.out
    assert "README.md" in out.err
    assert report.main(["--write", "--root", str(root)]) == 0
    assert right in readme.read_text()


@pytest.mark.parametrize("text, why", [
    ("Some <!-- fig:nobody-renders-this -->1.0%<!-- /fig --> figure.\n", "markers nothing renders: fig:nobody"),
    ("A sentence whose figure opens the next line,\n<!-- fig:tutorial-accuracy -->1%<!-- /fig -->.\n",
     "at the start of a line"),
])
def test_a_figure_the_check_cannot_vouch_for_fails(tmp_path, capsys, text, why):
    report = _report()
    root = _checkout(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text() + text)
    assert report.main(["--check", "--root", str(root)]) == 1
    assert why in capsys.readouterr().err


def test_a_missing_plot_fails_the_check_and_write_draws_it(tmp_path, capsys):
    report = _report()
    root = _checkout(tmp_path)
    png = root / report.PLOTS[0][0]
    png.unlink()
    assert report.main(["--check", "--root", str(root)]) == 1
    assert f"{report.PLOTS[0][0]} (missing)" in capsys.readouterr().err
    assert report.main(["--write", "--root", str(root)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.main(["--check", "--root", str(root)]) == 0


def test_a_plot_drawn_from_other_data_fails_the_check(tmp_path, capsys):
    # Each PNG carries the data it was drawn from: another recipe's picture, or one with no data
    # (a screenshot, a PNG saved by hand), under a plot's name does not pass.
    report = _report()
    root = _checkout(tmp_path)
    (first, *_), (second, *_) = report.PLOTS[:2]
    (root / second).write_bytes((root / first).read_bytes())
    assert report.main(["--check", "--root", str(root)]) == 1
    assert f"{second} (drawn from other data)" in capsys.readouterr().err
    (root / second).write_bytes((ROOT / "docs" / "serve.png").read_bytes())
    assert report.main(["--check", "--root", str(root)]) == 1
    assert f"{second} (carries no plot data)" in capsys.readouterr().err


def test_every_plot_is_shown_and_its_data_is_the_json():
    # Each plot's stored data is what its JSON gives (the check above), and a page shows it.
    report = _report()
    from mnist_keras3.bench import charts

    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for png, sources, data_of, _ in report.PLOTS:
        assert Path(png).name in text, f"{png} is drawn but no page shows it"
        data = json.loads(charts.png_data(ROOT / png))
        assert data == json.loads(charts.dump(data_of(report._load_sources(sources, ROOT))))
    fast = json.loads(charts.png_data(ROOT / "docs/plots/fast-recipe-3seeds-2cpu.png"))
    jax = next(s for s in fast["series"] if s["name"] == "jax")
    assert fast["machine"] == "2-core CPU" and jax["seeds"] == 3 and jax["accuracy"][-1] == 0.9931


def test_every_benchmark_file_is_cited_and_every_citation_exists():
    """docs/benchmarks holds the JSON files README.md and docs/*.md cite, no more: a file nothing
    cites fails, and so does a citation of a file that is not there, except one a table's pattern in
    report.TABLES awaits (its command may be written before a machine has run it). A citation is a
    path docs/benchmarks/NAME.json, or docs/benchmarks/{NAME, NAME}.json for several."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    cited = set(re.findall(r"docs/benchmarks/([\w.-]+\.json)", text))
    for group in re.findall(r"docs/benchmarks/\{([^}]*)\}\.json", text):
        cited |= {name.strip() + ".json" for name in group.split(",")}
    present = {p.name for p in (ROOT / "docs" / "benchmarks").glob("*.json")}
    assert not present - cited, f"in docs/benchmarks but cited nowhere: {sorted(present - cited)}"
    awaited = {name for _, _, src, _ in _report().TABLES if isinstance(src, str) and "*" in src
               for name in cited if Path("docs/benchmarks", name).match(src)}
    missing = cited - present - awaited
    assert not missing, f"cited but missing from docs/benchmarks: {sorted(missing)}"


def test_any_recipe_json_plots_a_gpu_one_included(tmp_path):
    # A recipe JSON from another machine (a GPU one) plots the same way; the title names its device,
    # a failed seed is left out of the medians, and the PNG carries exactly that data.
    from mnist_keras3.bench import charts

    def run(role, backend, seed, acc, secs, error=None):
        return {"role": role, "backend": backend, "seed": seed, "test_accuracy": acc, "cumulative_seconds": secs,
                **({"error": error} if error else {})}

    data = {"benchmark": "recipe", "marks": [0.99, 0.995], "machine": {"cores": 16, "device": "GPU: NVIDIA H200"},
            "recipe": {"file": "configs/fast.toml", "config": {"model": "fast", "epochs": 2}},
            "summary": [{"name": "jax", "role": "recipe", "backend": "jax"},
                        {"name": "plain PyTorch (reference)", "role": "reference", "backend": "torch"}],
            "runs": [run("recipe", "jax", 1, [0.98, 0.991], [1.0, 2.0]),
                     run("recipe", "jax", 2, [0.97, 0.993], [3.0, 4.0]),
                     run("recipe", "jax", 3, [], [], error="timed out"),
                     run("reference", "torch", 1, [0.985, 0.992], [0.5, 1.0])]}
    spec = charts.recipe_curves_data(data)
    assert spec["machine"] == "GPU: NVIDIA H200, 16-core host"
    jax = spec["series"][0]
    assert (jax["seeds"], jax["seconds"], jax["accuracy"]) == (2, [2.0, 3.0], [0.975, 0.992])
    png = tmp_path / "gpu.png"
    charts.draw_recipe_curves(spec, png)
    assert json.loads(charts.png_data(png)) == spec


def _gpu_spec():
    specs = [s for s in _report().TABLES if s[1] == "gpu"]  # docs/speed.md's and the README's
    assert {s[0] for s in specs} == {"docs/speed.md", "README.md"} and len({s[2:] for s in specs}) == 1
    return specs[0]


def test_the_gpu_block_says_not_measured_yet_without_gpu_files(tmp_path):
    (tmp_path / "docs" / "benchmarks").mkdir(parents=True)
    (tmp_path / "docs" / "benchmarks" / "fast-recipe-2cpu.json").write_text("{}")  # a CPU file is not a GPU run
    lines = _report().render(_gpu_spec(), root=tmp_path)
    assert lines[0].startswith("Not measured yet") and not any(c.isdigit() for c in "".join(lines))


def test_the_gpu_block_renders_each_gpu_file_with_its_device_and_compile_seconds(tmp_path):
    from mnist_keras3.bench import report as bench

    gpu = "NVIDIA H200"

    def run(role, backend, seed, s99, compile_s, loop="native"):
        reached = {"0.99": {"epoch": 1, "seconds": s99, "seconds_without_compile": round(s99 - compile_s, 3)},
                   "0.995": None}
        return {"role": role, "backend": backend, "seed": seed, "loop": loop, "reached": reached,
                "final_accuracy": 0.9912, "device": gpu, "compile_seconds": compile_s,
                "versions": {"backend": backend, "backend_version": "9.9", "keras_version": "3.15.1"}}

    recipe = {"benchmark": "recipe", "command": "python -m mnist_keras3.bench --recipe configs/fast.toml --json "
              "docs/benchmarks/fast-recipe-3seeds-gpu.json", "machine": {"device": gpu, "cpu": "x", "cores": 16},
              "runs": [run("recipe", "torch", 1, 4.4, 3.5), run("reference", "torch", 1, 1.6, 0.6, "plain PyTorch")]}
    recipe["summary"] = bench.recipe_summary(recipe["runs"])
    speed_rows = bench.summarize([{"backend": "torch", "loop": "reference", "batch_size": 64, "samples_per_s": [100.0],
                                   "samples_per_cpu_s": [90.0], "peak_rss_mb": 900.0, "device": gpu,
                                   "warmup_seconds": 2.5},
                                  {"backend": "jax", "loop": "auto", "batch_size": 64, "samples_per_s": [300.0],
                                   "samples_per_cpu_s": [250.0], "peak_rss_mb": 1900.0, "device": gpu,
                                   "warmup_seconds": 9.25}], [], [64])
    speed = {"benchmark": "speed", "command": "python -m mnist_keras3.bench --loops auto", "machine": {"device": gpu},
             "summary": speed_rows, "time_to_accuracy": [], "raw": []}
    folder = tmp_path / "docs" / "benchmarks"
    folder.mkdir(parents=True)
    (folder / "fast-recipe-3seeds-gpu.json").write_text(json.dumps(recipe))
    (folder / "loops-auto-gpu.json").write_text(json.dumps(speed))
    lines = _report().render(_gpu_spec(), root=tmp_path)
    text = "\n".join(lines)
    assert "Not measured yet" not in text
    assert lines[0].startswith("`python -m mnist_keras3.bench --recipe configs/fast.toml") and gpu in lines[0]
    assert "keras 3.15.1" in lines[0] and "torch 9.9" in lines[0]
    assert "| run | device | loop | seeds | s to 99.0% | s to 99.5% | compile + warm-up (s) |" in text
    assert "| torch | NVIDIA H200 | native | 1 | 4.4 | not reached | 3.50 | 0.9 | not reached |" in text
    assert "| plain PyTorch (reference) | NVIDIA H200 | plain PyTorch | 1 | 1.6 | not reached | 0.60 | 1.0 |" in text
    assert "| 64 | jax | auto | NVIDIA H200 | 300 | 3.00x | 250 | 2.78x | 1,900 | 9.25 |" in text
