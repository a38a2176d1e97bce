# Copyright 2026 The ppomax_trl Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Smoke run of `benchmarks/ppo_vs_trl112.py`: TRL 1.12 (in its cached venv) and both ppomax_trl trainers train.

The first run creates `benchmarks/.venv-trl112` with `pip install --no-deps trl==1.12.0`, so it needs PyPI (about 30 s);
later runs reuse it (about 30 s in total for the three tiny runs).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "ppo_vs_trl112.py"
STABILITY = REPO_ROOT / "benchmarks" / "stability.py"


def run_benchmark(script: Path, *args: str) -> None:
    """Run a benchmark script from the repository root; fail with the end of its output if it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, str(script), *args], check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_benchmark_smoke_reports_every_implementation(tmp_path):
    out = tmp_path / "smoke.json"
    run_benchmark(SCRIPT, "--smoke", "--out", str(out))
    report = json.loads(out.read_text())
    assert report["setting"] == "tiny" and report["workload"]["updates"] == 3
    summary = report["summary"]
    assert set(summary) == {"trl112", "ppomax_ppo", "ppomax_max", "una_online"}
    assert summary["trl112"]["trl"] == "1.12.0"
    assert summary["ppomax_ppo"]["trl"] != "1.12.0"  # the system TRL, not the venv's
    for impl, row in summary.items():
        for key in ("s_per_update", "peak_rss_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, (impl, key, row[key])
    assert set(report["ratios"]) == {
        "ppomax_ppo/trl112", "ppomax_max/trl112", "ppomax_max/ppomax_ppo", "una_online/ppomax_max"
    }  # fmt: skip
    for name, ratio in report["ratios"].items():
        assert math.isfinite(ratio["time"]) and math.isfinite(ratio["memory"]), name
    assert {run["impl"] for run in report["runs"]} == set(summary)
    for run in report["runs"]:
        assert run["timed_updates"] == 2 and len(run["s_per_update_all"]) == 2


@pytest.mark.slow
def test_stability_benchmark_smoke_runs_every_setting_and_reports(tmp_path):
    run_benchmark(STABILITY, "smoke", "--out", str(tmp_path))
    expected = {"default": {"vanilla", "ppo_max", "ppo_max_4_epochs"},
                "default_vader": {"vanilla", "ppo_max", "ppo_max_4_epochs"},
                "aggressive": {"vanilla", "ppo_max", "ppo_max_no_kl", "ppo_max_no_reward_norm", "ppo_max_no_warmup"}}  # fmt: skip
    for setting, runs in expected.items():
        records = {path.stem: json.loads(path.read_text()) for path in (tmp_path / setting).glob("*.json")}
        assert set(records) == runs
        for name, record in records.items():
            assert [e["update"] for e in record["evals"]] == [0, 1, 2], name
            assert record["trainer"] == ("PPOTrainer" if name == "vanilla" else "PPOMaxTrainer")
            for key in ("reward", "vader", "kl_seq", "kl_token", "distinct_2", "ppl_policy", "ppl_ref"):
                assert all(math.isfinite(e[key]) for e in record["evals"]), (name, key)
            assert record["evals"][0]["kl_seq"] == pytest.approx(0.0, abs=1e-5)  # untrained policy == reference
            ppo_rows = [
                row for row in record["train"] if "objective/kl" in row and not row.get("ppomax/critic_warmup")
            ]
            assert len(ppo_rows) == 2, name  # every PPO update's log, the last one included
        assert {r["reward"] for r in records.values()} == {"vader" if setting.endswith("_vader") else "rm"}
        assert records["vanilla"]["config"]["kl_coef"] == (0.0 if setting == "aggressive" else 0.05)
        assert records["ppo_max"]["config"]["kl_coef"] == 0.05
        assert (tmp_path / f"{setting}.png").read_bytes()[:4] == b"\x89PNG"
        table = (tmp_path / f"{setting}.md").read_text()
        assert all(f"| {run} |" in table for run in runs)
        for name, record in records.items():  # the training-reward column: first and last PPO update (n = 1 of 2)
            scores = [row["ppomax/raw_score_mean"] for row in record["train"] if not row.get("ppomax/critic_warmup")
                      and "ppomax/raw_score_mean" in row]  # fmt: skip
            assert len(scores) == 2 and f"| {scores[0]:+.2f} -> {scores[1]:+.2f} (n=1) |" in table, name
    ablations = {
        path.stem: json.loads(path.read_text())["config"] for path in (tmp_path / "aggressive").glob("*.json")
    }
    assert ablations["ppo_max_no_kl"]["kl_coef"] == 0.0
    assert ablations["ppo_max_no_reward_norm"]["reward_normalization"] == "none"
    assert ablations["ppo_max_no_reward_norm"]["use_reward_clip"] is False
    assert ablations["ppo_max_no_warmup"]["critic_warmup_steps"] == 0
    assert ablations["ppo_max"]["critic_warmup_steps"] == 1  # tiny smoke: one warm-up rollout
    default_configs = {
        path.stem: json.loads(path.read_text())["config"] for path in (tmp_path / "default").glob("*.json")
    }
    assert default_configs["ppo_max"]["num_ppo_epochs"] == 1
    assert default_configs["ppo_max_4_epochs"]["num_ppo_epochs"] == default_configs["vanilla"]["num_ppo_epochs"] == 4


@pytest.mark.slow
def test_arithmetic_benchmark_smoke_runs_ppo_max_and_grpo_and_reports(tmp_path):
    """benchmarks/arithmetic.py on a tiny policy: every run (TRL's `GRPOTrainer` included) trains 2 updates, is
    evaluated on the held-out questions before and after each, and the report draws them all."""
    run_benchmark(REPO_ROOT / "benchmarks" / "arithmetic.py", "smoke", "--out", str(tmp_path))
    records = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert set(records) == {"ppo_max", "ppo_max_vapo", "grpo", "ppo_max_lr_1e-6"}
    assert records["grpo"]["trainer"] == "GRPOTrainer" and records["ppo_max"]["trainer"] == "PPOMaxTrainer"
    assert records["ppo_max_vapo"]["config"]["value_lam"] == 1.0
    assert records["ppo_max_vapo"]["config"]["use_length_adaptive_lam"] is True
    assert records["ppo_max"]["config"]["value_lam"] is None
    assert records["ppo_max_lr_1e-6"]["config"]["learning_rate"] == 1e-6
    for name, record in records.items():
        assert record["complete"] and [e["update"] for e in record["evals"]] == [0, 1, 2], name
        assert len(record["evals"][-1]["completions"]) == record["held_out_questions"] == 4
        assert all(0.0 <= e["accuracy"] <= 1.0 for e in record["evals"])
        assert record["optimizer_steps_per_sample"] == pytest.approx(1 / 8), name  # one step per 8 samples
    assert (tmp_path / "arithmetic.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ppo_max_vapo |" in (tmp_path / "arithmetic.md").read_text()


def _overoptimisation():
    """benchmarks/overoptimisation.py as a module (its folder on the path for its sibling imports)."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import overoptimisation

    return overoptimisation


def test_proxy_agreement_and_openers_by_hand():
    module = _overoptimisation()
    gold, proxy = [[0.9, 0.5, 0.0, 0.45]], [[2.0, 3.0, -1.0, 3.0]]
    # pairs with |gold diff| >= 0.2: (0.9, 0.5) wrong, (0.9, 0.0) right, (0.9, 0.45) wrong, (0.5, 0.0) right,
    # (0.0, 0.45) right; (0.5, 0.45) is under the margin
    assert module.agreement(gold, proxy, 0.2) == (3 / 5, 5)
    assert module.agreement([[0.5, 0.0]], [[1.0, 1.0]], 0.2) == (0.5, 1)  # a proxy tie counts half
    assert module.opener_of("The pizza at this little corner place was great.") == "The pizza at this"
    assert module.opener_of("Great food, friendly staff, nice place") == "Great food, friendly"
    assert module.opener_of("Too short to use.") is None
    assert module.opener_of("Wow. Loved this place so much") is None  # a sentence end inside the opener
    splits = module.load_splits()
    assert [len(openers) for openers in splits.values()] == list(module.SPLITS.values())
    everything = [opener for openers in splits.values() for opener in openers]
    assert len(set(map(str.lower, everything))) == len(everything)  # disjoint splits, no repeated opener


@pytest.mark.slow
def test_overoptimisation_smoke_runs_every_trainer_on_the_proxy(tmp_path):
    run_benchmark(REPO_ROOT / "benchmarks" / "overoptimisation.py", "smoke", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "proxy.json").read_text())
    assert summary["train_openers"] == summary["held_out_openers"] == summary["held_out_k"] == 4
    assert summary["k"] == 6  # two sampling rounds (4 + 2) merged per opener
    lists = [json.loads(line) for line in (tmp_path / "work" / "proxy_lists" / "train.jsonl").read_text().splitlines()]
    assert [len(row["completions"]) for row in lists] == [6] * 4
    assert {path.name for path in (tmp_path / "samples").iterdir()} == {  # the rounds, kept with the results
        "proxy_train.r0.jsonl",
        "proxy_train.r1.jsonl",
        "proxy_held_out.r0.jsonl",
    }
    assert all(len(row["scores"]) == len(row["completions_ids"]) == 6 for row in lists)
    assert 0.0 <= summary["held_out_agreement"] <= 1.0 and summary["held_out_pairs"] > 0
    assert len(summary["calibration"]["gold_mean_by_proxy_quintile"]) == 5
    assert summary["sample_seconds"] > 0 and summary["train_seconds"] > 0
    assert json.loads((tmp_path / "proxies" / f"{summary['proxy_sha256'][:12]}.json").read_text()) == summary
    trainers = {}
    for run in ("ppo", "ppo_max", "grpo", "rloo", "online_una", "ppo_max_critic_from_policy"):
        record = json.loads((tmp_path / "runs" / f"{run}.json").read_text())
        trainers[run] = record["trainer"]
        assert record["proxy_sha256"] == summary["proxy_sha256"], run  # every run names the proxy it trained on
        assert record["complete"] and [e["update"] for e in record["evals"]] == [0, 1, 2], run
        for point in record["evals"]:
            assert len(point["completions"]) == record["eval_samples"] == 4, run  # every completion is saved
            assert point["gold"] == pytest.approx(sum(c["gold"] for c in point["completions"]) / 4), run
            assert point["kl_seq"] == pytest.approx(sum(c["kl"] for c in point["completions"]) / 4), run
        assert record["evals"][0]["kl_seq"] == pytest.approx(0.0, abs=1e-5), run  # the policy starts at the reference
        assert record["optimizer_steps_per_sample"] > 0 and record["train"], run
        assert not (tmp_path / "work" / "runs" / run).exists(), run  # a complete run's checkpoints are removed
    assert trainers["grpo"] == "GRPOTrainer" and trainers["rloo"] == "RLOOTrainer"
    assert trainers["online_una"] == "OnlineUNATrainer" and trainers["ppo"] == "PPOTrainer"
    assert "another proxy" not in (tmp_path / "runs.md").read_text()
    assert (tmp_path / "frontier.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0
    assert "grpo" in (tmp_path / "runs.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("run", ["ppo_max", "grpo"])
def test_overoptimisation_run_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path, run):
    """A run stopped after one update and started again continues from its checkpoint: the evals before it are kept,
    none is repeated, and (PPO-max: every step seeds itself) the rest equals an uninterrupted run's."""
    from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model

    work = tmp_path / "work"
    tokenizer = build_tiny_tokenizer()
    tiny_causal_lm(tokenizer, seed=0).save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    tiny_reward_model(tokenizer, seed=1).save_pretrained(work / "proxy_reward_model")
    openers = tmp_path / "openers.json"
    openers.write_text(json.dumps({"openers": [{"opener": f"the {i} film was"} for i in range(2000)]}))
    common = ["run", "--tiny", "--run", run, "--updates", "3", "--eval-every", "1", "--save-every", "1",
              "--eval-samples", "4", "--learning-rate", "0.01", "--openers", str(openers), "--work-dir", str(work)]  # fmt: skip
    script = REPO_ROOT / "benchmarks" / "overoptimisation.py"
    run_benchmark(script, *common, "--results-dir", str(tmp_path / "split"), "--stop-after", "1")
    stopped = json.loads((tmp_path / "split" / "runs" / f"{run}.json").read_text())
    assert not stopped["complete"] and [e["update"] for e in stopped["evals"]] == [0, 1]
    if run == "ppo_max":  # a checkpoint is never continued on another proxy (a new session retrains the proxy)
        tiny_reward_model(tokenizer, seed=2).save_pretrained(work / "proxy_reward_model")
        proc = subprocess.run([sys.executable, str(script), *common, "--results-dir", str(tmp_path / "split")],
                              check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)  # fmt: skip
        assert proc.returncode != 0 and "trained on another proxy" in proc.stderr, proc.stderr[-3000:]
        tiny_reward_model(tokenizer, seed=1).save_pretrained(work / "proxy_reward_model")  # the same weights again
    run_benchmark(script, *common, "--results-dir", str(tmp_path / "split"))
    resumed = json.loads((tmp_path / "split" / "runs" / f"{run}.json").read_text())
    assert resumed["complete"] and [e["update"] for e in resumed["evals"]] == [0, 1, 2, 3]
    assert len(resumed["resumed_from"]) == 1 and resumed["evals"][:2] == stopped["evals"][:2]
    # the second process started at the checkpoint's step, not from scratch
    assert resumed["process_start_steps"] == [0, stopped["evals"][-1]["global_step"]] != [0, 0]
    run_benchmark(script, *common, "--results-dir", str(tmp_path / "whole"))
    whole = json.loads((tmp_path / "whole" / "runs" / f"{run}.json").read_text())
    assert whole["evals"][-1]["kl_seq"] != 0.0  # the policy moved, so equal evals are not trivially equal
    if run == "ppo_max":
        keys = ("proxy", "gold", "kl_seq", "completions")
        assert [{k: e[k] for k in keys} for e in resumed["evals"]] == [{k: e[k] for k in keys} for e in whole["evals"]]


def test_gold_at_matched_kl_and_the_last_third_trend_by_hand():
    module = _overoptimisation()
    evals = [
        {"update": 0, "kl_seq": 0.0, "gold": 0.1, "gold_se": 0.02, "proxy": 0.0},
        {"update": 10, "kl_seq": 1.0, "gold": 0.3, "gold_se": 0.03, "proxy": 1.0},
        {"update": 20, "kl_seq": 3.0, "gold": 0.5, "gold_se": 0.01, "proxy": 2.0},
        {"update": 30, "kl_seq": 6.0, "gold": 0.2, "gold_se": 0.04, "proxy": 3.0},
    ]
    # KL 2 lies halfway between the evals at KL 1 and 3: gold 0.4, the larger s.e. of the two
    assert module.gold_at_kl(evals, 2.0) == (pytest.approx(0.4), 0.03)
    assert module.gold_at_kl(evals, 5.0) == (pytest.approx(0.5 + (2 / 3) * (0.2 - 0.5)), 0.04)
    assert module.gold_at_kl(evals, 10.0) is None  # never reached
    trend = module.last_third_trend(evals)
    assert trend["from_update"] == 20  # nearest two thirds of 30
    assert trend["proxy_change"] == 1.0 and trend["gold_change"] == pytest.approx(-0.3)
    assert trend["gold_change_se"] == pytest.approx((0.01**2 + 0.04**2) ** 0.5)
    assert trend["over_optimised"]  # proxy up, gold down by more than two standard errors
    evals[-1]["gold"] = 0.45
    assert not module.last_third_trend(evals)["over_optimised"]


def test_frontier_comparison_at_matched_kl_by_hand():
    module = _overoptimisation()

    def record(run, points):
        evals = [
            {"update": 10 * i, "kl_seq": kl, "gold": gold, "gold_se": 0.01} for i, (kl, gold) in enumerate(points)
        ]
        return {"run": run, "evals": evals}

    anchor = record("ppo_max", [(0.0, 0.0), (2.0, 0.4), (4.0, 0.5)])
    lower = record("grpo", [(0.0, 0.0), (1.0, 0.05), (3.0, 0.1)])  # KL 1: 0.2 vs 0.05; KL 2: 0.4 vs 0.075
    higher = record("rloo", [(0.0, 0.0), (2.0, 0.6)])  # KL 2: 0.4 vs 0.6, beyond 2 s.e. below
    table = module.frontier_markdown([anchor, lower, higher], grid=(1.0, 2.0, 5.0)).splitlines()
    se = f"{(2 * 0.01**2) ** 0.5:.3f}"
    assert table[2] == f"| grpo | +0.150 +- {se} | +0.325 +- {se} | - | +0.100 (20) | 10 |"
    assert (
        table[3] == f"| rloo | -0.100 +- {se} **below** | -0.200 +- {se} **below** | - | +0.600 (10) | not within 20 |"
    )


def test_report_names_each_runs_proxy_when_runs_span_proxies():
    module = _overoptimisation()
    records = [
        {"run": "grpo", "proxy_sha256": "a" * 64},
        {"run": "ppo", "proxy_sha256": "b" * 64},
        {"run": "ppo_max", "proxy_sha256": "b" * 64},
    ]
    assert module.proxy_note(records[1:], "b" * 64) == ""  # all on proxy.json's proxy: nothing to say
    note = module.proxy_note(records, "b" * 64)
    assert f"`{'a' * 12}`: grpo; `{'b' * 12}` (proxy.json): ppo, ppo_max." in note
    assert "another proxy" in module.proxy_note(records[1:], "c" * 64)  # proxy.json retrained after every run


@pytest.mark.slow
def test_lora_footprint_smoke_measures_both_critics(tmp_path):
    """benchmarks/lora_footprint.py on a tiny LoRA policy: the full and the LoRA critic each run in their own process,
    and the LoRA critic's saves hold adapter files only."""
    out = tmp_path / "lora_footprint.json"
    run_benchmark(REPO_ROOT / "benchmarks" / "lora_footprint.py", "--smoke", "--threads", "1", "--out", str(out))
    report = json.loads(out.read_text())
    full, lora = report["runs"]["full_critic"], report["runs"]["lora_critic"]
    assert full["critic_class"] == "Qwen2ForSequenceClassification"
    assert lora["critic_class"] == "PeftModelForSequenceClassification"
    assert full["steps"] == lora["steps"] == 4 and list(lora["checkpoint_bytes"]) == ["checkpoint-2", "checkpoint-4"]
    assert "value_model/model.safetensors" in full["save_model_files"]
    assert [f for f in lora["save_model_files"] if f.startswith("value_model/")] == [
        "value_model/README.md", "value_model/adapter_config.json", "value_model/adapter_model.safetensors"
    ]  # fmt: skip
    assert lora["save_model_bytes"]["critic"] < full["save_model_bytes"]["critic"] / 4
    for run in (full, lora):
        assert all(math.isfinite(mb) and mb > 0 for mb in run["peak_rss_mb"].values())


def _robustness_map():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import robustness_map

    return robustness_map


def _map_record(trainer, lr, seed, golds, distinct=None, lengths=None, se=0.05):
    """A complete map run with evals every 10 updates: gold, distinct-2 and length per eval."""
    distinct = distinct or [0.9] * len(golds)
    lengths = lengths or [23.0] * len(golds)
    evals = [
        {"update": 10 * i, "gold": g, "gold_se": se, "kl_seq": float(i), "distinct_2": d, "length": n,
         "eos_rate": 0.1, "seconds": 60.0 * i}
        for i, (g, d, n) in enumerate(zip(golds, distinct, lengths, strict=True))
    ]  # fmt: skip
    return {"run": trainer, "name": f"{trainer}_lr{lr:g}_seed{seed}", "seed": seed, "complete": True,
            "config": {"learning_rate": lr}, "evals": evals}  # fmt: skip


def test_robustness_map_collapse_gain_and_working_range_by_hand():
    module = _robustness_map()
    rising = [0.2 + 0.03 * i for i in range(11)]  # gain 0.30 > 2 x hypot(0.05, 0.05) = 0.141
    healthy = module.summarise(_map_record("ppo_max", 1e-5, 0, rising))
    assert healthy["improved"] and not healthy["collapsed"] and healthy["gain"] == pytest.approx(0.30)
    flat = module.summarise(_map_record("ppo_max", 1e-5, 0, [0.2] * 10 + [0.3]))
    assert not flat["improved"] and flat["gain_se"] == pytest.approx(math.hypot(0.05, 0.05))  # 0.1 is noise
    # distinct-2 under 0.5 at updates 80, 90 and 100 collapses; at only 90 and 100 it does not
    low = [0.9] * 8 + [0.4] * 3
    assert module.summarise(_map_record("ppo", 1e-4, 0, rising, distinct=low))["collapse_reasons"] == ["distinct-2"]
    assert not module.summarise(_map_record("ppo", 1e-4, 0, rising, distinct=[0.9] * 9 + [0.4] * 2))["collapsed"]
    short = [23.0] * 8 + [11.0] * 3  # under half the update-0 length (11.5) for the last 20 updates
    assert module.summarise(_map_record("ppo", 1e-4, 0, rising, lengths=short))["collapse_reasons"] == ["length"]
    # gold 0.15 under its best: more than 2 x hypot(0.05, 0.05) = 0.141 collapses, 0.13 does not
    peaked = [0.2, 0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.65]
    assert module.summarise(_map_record("grpo", 3e-5, 1, peaked))["collapse_reasons"] == ["gold fell"]
    assert not module.summarise(_map_record("grpo", 3e-5, 1, [*peaked[:-1], 0.67]))["collapsed"]

    assert module.working_range({3e-6: False, 1e-5: True, 3e-5: True, 1e-4: False}) == (3.0, 1e-5, 3e-5)
    assert module.working_range({3e-6: True, 1e-5: False, 3e-5: True, 1e-4: True}) == (pytest.approx(1e-4 / 3e-5),
                                                                                       3e-5, 1e-4)  # fmt: skip
    assert module.working_range({3e-6: False, 1e-5: True, 3e-5: False, 1e-4: False}) == (1.0, 1e-5, 1e-5)
    assert module.working_range(dict.fromkeys(module.LEARNING_RATES, False)) == (0.0, None, None)

    def grid_of(works: dict[str, set[float]], collapses: dict[str, set[float]]) -> list[dict]:
        rows = []
        for trainer, lr, seed in module.grid():
            golds = rising if lr in works.get(trainer, ()) else [0.2] * 11
            distinct = [0.3] * 11 if lr in collapses.get(trainer, ()) and seed == 1 else None
            rows.append(module.summarise(_map_record(trainer, lr, seed, golds, distinct=distinct)))
        return rows

    assert module.judge(grid_of({}, {})[:-1])["complete"] is False  # 23 of 24: no verdict
    verdict = module.judge(grid_of({"ppo_max": {1e-5, 3e-5, 1e-4}, "ppo": {1e-5}, "grpo": {3e-5}}, {"ppo": {1e-4}}))
    assert verdict["per_trainer"]["ppo_max"]["width"] == pytest.approx(10.0) and verdict["wider"]
    assert verdict["per_trainer"]["ppo"]["collapsed_at"] == [1e-4] and verdict["collapses_only_where_others_do"]
    # PPO-max collapsing at 1e-4 where GRPO does not fails the second target; a cell with one collapsed seed fails
    verdict = module.judge(grid_of({"ppo_max": {1e-5, 3e-5, 1e-4}}, {"ppo": {1e-4}, "ppo_max": {1e-4}}))
    assert not verdict["collapses_only_where_others_do"] and verdict["per_trainer"]["ppo_max"]["working"] == [
        1e-5,
        3e-5,
    ]
    assert not module.judge(grid_of({"ppo_max": {1e-5}, "ppo": {1e-5}}, {}))["wider"]  # equal widths


def test_proxy_merged_from_a_committed_lora_adapter_scores_like_the_adapter(tmp_path):
    """The map's proxy is a committed LoRA adapter: merged into the base it scores exactly as the adapter model does,
    and its identity is the adapter file's sha256 (the same bytes on every machine)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm

    module = _overoptimisation()
    tokenizer = build_tiny_tokenizer()
    base, work, results = tmp_path / "base", tmp_path / "work", tmp_path / "results"
    tiny_causal_lm(tokenizer, seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    with pytest.raises(FileNotFoundError, match="no adapter at"):
        module.ensure_proxy(work, results, base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name or "score" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))  # a trained adapter: B != 0, a new head
    lora.eval().save_pretrained(results / "proxy_lora")
    proxy_dir = module.ensure_proxy(work, results, base)
    merged = AutoModelForSequenceClassification.from_pretrained(proxy_dir, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer("the film was a delight")["input_ids"]])
    with torch.no_grad():
        expected, got = lora(input_ids=ids).logits, merged(input_ids=ids).logits
        plain = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).eval()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)
    sha = module.file_sha256(results / "proxy_lora" / "adapter_model.safetensors")
    assert module.proxy_sha256(proxy_dir) == sha
    assert not (work / "proxy_reward_model.partial").exists()


@pytest.mark.slow
def test_robustness_map_driver_runs_the_grid_commits_each_run_and_reports(tmp_path):
    """`all` runs the cells not complete yet under their grid names at their learning rate and seed, commits each
    run's JSON alone as it lands, skips complete runs when started again; `report` writes the map and the figure."""
    from ppomax_trl.tiny import build_tiny_tokenizer, tiny_causal_lm, tiny_reward_model

    work, results = tmp_path / "work", tmp_path / "repo" / "results"
    tokenizer = build_tiny_tokenizer()
    tiny_causal_lm(tokenizer, seed=0).save_pretrained(work / "base")
    tokenizer.save_pretrained(work / "base")
    tiny_reward_model(tokenizer, seed=1).save_pretrained(work / "proxy_reward_model")
    repo = tmp_path / "repo"
    (repo / "staged.txt").parent.mkdir(parents=True)
    (repo / "staged.txt").write_text("a user's staged change\n")
    for command in (
        ["init", "-q"],
        ["config", "user.email", "t@t"],
        ["config", "user.name", "t"],
        ["add", "staged.txt"],
    ):
        subprocess.run(["git", "-C", str(repo), *command], check=True)
    script = REPO_ROOT / "benchmarks" / "robustness_map.py"
    flags = ["--tiny", "--trainers", "ppo_max", "grpo", "--learning-rates", "0.01", "--seeds", "3", "--updates", "2",
             "--eval-every", "1", "--results-dir", str(results), "--work-dir", str(work)]  # fmt: skip
    run_benchmark(script, "all", *flags, "--commit")
    for trainer in ("ppo_max", "grpo"):
        record = json.loads((results / "runs" / f"{trainer}_lr0.01_seed3.json").read_text())
        assert record["complete"] and record["run"] == trainer and record["seed"] == 3
        assert record["config"]["learning_rate"] == 0.01 and [e["update"] for e in record["evals"]] == [0, 1, 2]
        assert all("eos" in c for e in record["evals"] for c in e["completions"])
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s", "--name-only"], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    assert log.count("robustness map: ") == 2 and "staged.txt" not in log  # each run alone, the user's change left
    committed_map = subprocess.run(["git", "-C", str(repo), "show", "HEAD:results/map.md"], check=True,
                                   capture_output=True, text=True).stdout  # fmt: skip
    assert "| ppo_max | 0.01 | 3 |" in committed_map and "| grpo | 0.01 | 3 |" in committed_map  # redrawn, committed
    assert log.count("results/map.png") >= 1
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], check=True, capture_output=True,
                            text=True).stdout  # fmt: skip
    assert "A  staged.txt" in status
    proc = subprocess.run([sys.executable, str(script), "all", *flags], check=True, capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)  # fmt: skip
    assert "0 runs to go" in proc.stderr
    run_benchmark(script, "report", "--results-dir", str(results))
    text = (results / "map.md").read_text()
    assert "| ppo_max | 0.01 | 3 |" in text and "| grpo | 0.01 | 3 |" in text and "not judged yet (2 of 24" in text
    assert "| ppo_max | 0.01 | 1 | " in text and "pending (1 of 2 seeds)" in text  # one seed of two: no verdict
    assert (results / "map.png").stat().st_size > 10_000
