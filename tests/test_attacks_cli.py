"""`vitpe attack ...` end to end on micro models: run (optimisation and closed form), compare,
figures and the privacy block of main.tex; skipped optional inputs are recorded, not fatal."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import torch
import yaml

from conftest import BIN, ROOT, make_attack_data, micro_params_file, run
from vitpe.attacks.runner import attack_settings
from vitpe.cli import main
from vitpe.config import load_params
from vitpe.runs import supervised_run
from vitpe.errors import ConfigError
from vitpe.report.tables import privacy_tables, table_latex
from vitpe.models.weights import save_weights
from vitpe.train.supervised import build_model

OVERRIDES = ['attacks={"gradvit": {"image_prior": "missing/moco_v2_r50.pth"}, '
             '"metrics": {"lpips_alexnet": "missing/alexnet-owt-7be5be79.pth", "bootstrap": 200}}']


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    data = make_attack_data(tmp / "data")
    params_file = micro_params_file(tmp, data)
    params = load_params(params_file, OVERRIDES)
    weights = {}
    for exp in ("deit_s", "mjp", "mjp_april"):
        path = tmp / "ckpt" / exp / "model.safetensors"
        torch.manual_seed(0)  # the summaries in tests/data/attack_summaries_micro.json are of these weights
        save_weights(build_model(supervised_run(params, exp)), path)
        weights[exp] = path
    return tmp, params_file, params, weights


def _attack(tmp, params_file, weights, exp, kind, overrides=OVERRIDES):
    out = tmp / "metrics" / "tiny" / "seed0" / exp / "attacks.json"
    table, recon = tmp / "attacks" / exp / "images.csv", tmp / "attacks" / exp / "reconstructions.safetensors"
    argv = ["attack", "run", "--params", str(params_file), *sum((["--set", o] for o in overrides), []),
            "--experiment", exp, "--kind", kind, "--weights", str(weights[exp]), "--out", str(out),
            "--table", str(table), "--recon", str(recon), "--images", "2", "--iterations", "3", "--device", "cpu"]
    assert main(argv) == 0
    return json.loads(out.read_text()), pd.read_csv(table)


@pytest.mark.parametrize("exp, kind", [("mjp", "supervised"), ("mjp_april", "april")])
def test_metrics_json_keeps_the_keys_and_values_of_the_former_runner(setup, exp, kind):
    """tests/data/attack_summaries_micro.json: the same runs by the runner before the attack registry
    (timings, which differ run to run, left out): the registry changed no key and no value."""
    tmp, params_file, _, weights = setup
    # the attacks the former runner ran, with its client's shuffle ratio (the release's gamma)
    former = [*OVERRIDES, 'attacks={"standard_closed_form": []}', "scales.tiny.mjp_gamma=0.1"]
    # recorded on 1 thread of one CPU: float32 reductions on more threads move the closed forms' values
    # by ~1e-8, another CPU's kernels (AMD EPYC vs the recording machine) the ill-conditioned APRIL
    # solves and the 3-step optimisations by up to 5e-3 relative (their stds); a changed key, mapping or
    # formula moves them by far more
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found, _ = _attack(tmp, params_file, weights, exp, kind, former)
    finally:
        torch.set_num_threads(threads)
    expected = json.loads((ROOT / "tests/data/attack_summaries_micro.json").read_text())[exp]
    found = {k: v for k, v in found.items() if k != "seconds" and "_seconds_" not in k}
    assert sorted(found) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(found[key]), key
        elif isinstance(value, float):
            assert found[key] == pytest.approx(value, rel=1e-2, abs=1e-9), key
        else:
            assert found[key] == value, key


def test_attack_run_records_threat_model_and_skips(setup):
    tmp, params_file, _, weights = setup
    metrics, table = _attack(tmp, params_file, weights, "mjp", "supervised")
    assert metrics["gradvit_image_prior"] == "skipped" and "moco_v2_r50.pth" in metrics["gradvit_image_prior_reason"]
    assert metrics["gradvit_variant"] == "GradViT w/o image prior"
    assert metrics["lpips"] == "skipped" and "alexnet-owt-7be5be79.pth" in metrics["lpips_reason"]
    threat = (metrics["threat_batch_size"], metrics["threat_labels"], metrics["threat_model_mode"])
    assert threat == (1, "recovered", "eval")
    assert metrics["ig_iterations"] == 3 and metrics["num_images"] == 2 and metrics["threat_dal_weight"] == 0.01
    assert metrics["inverting_gradients_plain_images"] == 2 and 0 <= metrics["clean_top1"] <= 100
    # 2 images x 2 client modes x 4 attacks (2 optimisation, 2 standard closed forms), each with every metric
    assert len(table) == 16 and set(table["attack"]) == {"inverting_gradients", "gradvit", "pe_gradient",
                                                         "pe_gradient_adaptive"}
    assert table[["psnr", "ssim", "fft2d", "psnr_fed", "pos_acc"]].notna().all().all()
    assert "lpips" not in table
    shuffled = table[table["mode"] == "shuffled"]
    # the MJP client's unknown-PE positions are what the attacker detects (zero PE-gradient rows)
    assert (shuffled["n_detected"] == shuffled["n_shuffled"]).all()
    assert table[table["mode"] == "plain"]["psnr_shuffled"].isna().all()
    for key, value in metrics.items():
        assert isinstance(value, (int, float, str)), key


def test_closed_form_run_compare_figures_and_table(setup):
    tmp, params_file, params, weights = setup
    metrics, table = _attack(tmp, params_file, weights, "mjp_april", "april")
    assert set(table["attack"]) == {"april", "april_adaptive"} and metrics["april_known_cls"] == "true"
    _attack(tmp, params_file, weights, "deit_s", "supervised")
    tables = [str(tmp / "attacks" / e / "images.csv") for e in ("deit_s", "mjp", "mjp_april")]
    paired = tmp / "metrics" / "tiny" / "seed0" / "attacks" / "paired.json"
    assert main(["attack", "compare", "--params", str(params_file), *sum((["--set", o] for o in OVERRIDES), []),
                 "--tables", *tables, "--out", str(paired)]) == 0
    values = json.loads(paired.read_text())
    assert values["deit_s_vs_mjp_inverting_gradients_plain_psnr_diff_n"] == 2
    a = pd.read_csv(tables[0]).set_index(["attack", "mode", "image"])["psnr"]
    b = pd.read_csv(tables[1]).set_index(["attack", "mode", "image"])["psnr"]
    diff = (a - b).sort_index().loc["gradvit", "shuffled"]
    assert values["deit_s_vs_mjp_gradvit_shuffled_psnr_diff_mean"] == pytest.approx(diff.mean())

    for name, recon, attacks in (("grid", ["deit_s", "mjp"], ["inverting_gradients"]),
                                 ("april", ["mjp_april"], ["april", "april_adaptive"])):
        outs = [tmp / "fig" / f"{name}.png", tmp / "fig" / f"{name}.pdf"]
        assert main(["attack", "grid-figure", "--recon",
                     *[str(tmp / "attacks" / e / "reconstructions.safetensors") for e in recon],
                     "--tables", *[str(tmp / "attacks" / e / "images.csv") for e in recon],
                     "--attacks", *attacks, "--out", *map(str, outs)]) == 0
        assert outs[0].read_bytes()[:4] == b"\x89PNG" and outs[1].read_bytes()[:4] == b"%PDF"
    outs = [tmp / "fig" / "psnr.png"]
    assert main(["attack", "psnr-figure", "--tables", *tables, "--out", str(outs[0])]) == 0
    assert outs[0].read_bytes()[:4] == b"\x89PNG"

    # the privacy block, for the models attacked here (the paired table shows DeiT-S vs MJP)
    view = {**params, "attacks": {**params["attacks"], "models": ["deit_s", "mjp"], "finetuned": [],
                                  "april_models": ["mjp_april"], "compare": [["deit_s", "mjp"]]},
            "scales": {**params["scales"], "tiny": {**params["scales"]["tiny"], "seeds": [0]}}}  # seed 0 attacked
    tex = "\n".join(map(table_latex, privacy_tables(view, tmp / "metrics" / "tiny", "tiny", {})))
    assert "tab:privacy" in tex and "tab:privacy-april" in tex and "tab:privacy-paired" in tex
    mean = values["deit_s_vs_mjp_inverting_gradients_plain_psnr_diff_mean"]
    row = next(line for line in tex.splitlines() if line.startswith("DeiT-S - MJP & IG & plain"))
    assert f"{mean:+.2f}" in row and re.search(r"\[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", row)
    # the closed forms on the standard block: their columns and paired rows
    assert "PE-grad adaptive kept shuf." in tex and "DeiT-S - MJP & PE-grad & plain" in tex
    # no attack metrics at all: no privacy block (a workflow without the attack rules)
    assert privacy_tables(view, tmp / "nothing", "tiny", {}) == []


def test_small_batches_match_reconstructions_and_refuse_the_closed_form(setup, tmp_path, capsys):
    tmp, params_file, _, weights = setup
    no_april = ('attacks={"threat": {"batch_size": 2}, "april_models": [], "closed_form": [], '
                '"standard_closed_form": []}')
    outputs = ["--out", str(tmp_path / "deit_s.json"), "--table", str(tmp_path / "deit_s.csv"),
               "--recon", str(tmp_path / "deit_s.safetensors")]
    argv = ["attack", "run", "--params", str(params_file), "--images", "2", "--iterations", "2",
            "--experiment", "deit_s", "--kind", "supervised", "--weights", str(weights["deit_s"]), *outputs]
    # APRIL inverts one image's gradient: batches of 2 with APRIL configured are refused up front
    assert main([*argv, "--set", 'attacks={"threat": {"batch_size": 2}}']) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "attacks.threat.batch_size is 2, but APRIL's closed form needs 1" in err
    assert not any(tmp_path.iterdir())
    assert main([*argv, "--set", no_april]) == 0
    assert json.loads((tmp_path / "deit_s.json").read_text())["threat_batch_size"] == 2
    table = pd.read_csv(tmp_path / "deit_s.csv")
    assert len(table) == 8 and table["label_ok"].isin([0.0, 1.0]).all()


TIMING = ("seconds", "info_seconds")


def _run_job(tmp, params_file, weights, exp, out_dir, *extra):
    out = out_dir / "attacks.json"
    argv = ["attack", "run", "--params", str(params_file), *sum((["--set", o] for o in OVERRIDES), []),
            "--experiment", exp, "--kind", "supervised", "--weights", str(weights[exp]), "--out", str(out),
            "--table", str(out_dir / "images.csv"), "--recon", str(out_dir / "reconstructions.safetensors"),
            "--images", "3", "--iterations", "3", "--device", "cpu", *extra]
    assert main(argv) == 0
    return out_dir


def _outputs(folder):
    from vitpe.attacks.outputs import read_reconstructions

    metrics = json.loads((folder / "attacks.json").read_text())
    table = pd.read_csv(folder / "images.csv")
    return metrics, table, *read_reconstructions(folder / "reconstructions.safetensors")


def test_job_split_merges_into_the_single_job_outputs(setup, tmp_path):
    """3 images in 2 jobs (2 + 1), merged (given in reverse order): the per-image table, reconstructions
    and aggregates equal one job's over all 3 images (timings aside); a job's images are its share."""
    tmp, params_file, _, weights = setup
    single = _run_job(tmp, params_file, weights, "mjp", tmp_path / "single")
    parts = [_run_job(tmp, params_file, weights, "mjp", tmp_path / f"job_{k}", "--jobs", "2", "--job", str(k))
             for k in (0, 1)]
    assert [len(_outputs(p)[1]) for p in parts] == [16, 8]  # 2 and 1 images x 2 modes x 4 attacks
    merged = tmp_path / "merged"
    names = ("attacks.json", "images.csv", "reconstructions.safetensors")
    assert main(["attack", "merge", *sum(([flag, *[str(p / n) for p in reversed(parts)]]
                                          for flag, n in zip(("--metrics", "--tables", "--recons"), names)), []),
                 "--out", str(merged / names[0]), "--table", str(merged / names[1]),
                 "--recon", str(merged / names[2])]) == 0
    m1, t1, r1, meta1 = _outputs(single)
    m2, t2, r2, meta2 = _outputs(merged)
    keep = [c for c in t1.columns if c not in TIMING]
    assert list(t2.columns) == list(t1.columns) and len(t1) == 3 * 2 * 4
    pd.testing.assert_frame_equal(t1[keep], t2[keep], check_exact=True)
    assert meta1 == meta2 and list(r1) == list(r2) and all(torch.equal(r1[k], r2[k]) for k in r1)
    differ = {k for k in m1 if m1[k] != m2.get(k) and not (m1[k] != m1[k] and m2[k] != m2[k])}  # NaN == NaN
    assert set(m1) == set(m2) and differ <= {"seconds", "attack_jobs"} | {k for k in m1 if "_seconds_" in k}
    assert m1["gradvit_shuffled_psnr_mean"] == m2["gradvit_shuffled_psnr_mean"] and m1["num_images"] == 3
    assert m2["attack_jobs"] == 2 and m2["num_images"] == 3 and "job" not in m2


def test_merge_refuses_missing_jobs_and_mismatched_settings(setup, tmp_path, capsys):
    from vitpe.attacks.outputs import merge_jobs
    from vitpe.errors import DataError

    tmp, params_file, _, weights = setup
    parts = [_run_job(tmp, params_file, weights, "deit_s", tmp_path / f"job_{k}", "--jobs", "2", "--job", str(k))
             for k in (0, 1)]
    names = ("attacks.json", "images.csv", "reconstructions.safetensors")
    files = lambda ps: [[p / n for p in ps] for n in names]  # noqa: E731
    out = [tmp_path / "out" / n for n in ("attacks.json", "images.csv", "r.safetensors")]
    with pytest.raises(DataError, match=r"job indices \[0\].*every job 0..1 of attack_jobs 2"):
        merge_jobs(*files(parts[:1]), *out)
    metrics = json.loads((parts[1] / "attacks.json").read_text())
    (parts[1] / "attacks.json").write_text(json.dumps({**metrics, "ig_iterations": 999}))
    with pytest.raises(DataError, match="ig_iterations is 999, job 0 recorded 3"):
        merge_jobs(*files(parts), *out)
    assert not any(p.exists() for p in out)  # nothing a workflow could take for a result
    # 4 jobs of 3 images: at most one job per image, so job 3 does not exist (one line, exit 2, no output)
    with pytest.raises(AssertionError):
        _run_job(tmp, params_file, weights, "deit_s", tmp_path / "bad", "--jobs", "4", "--job", "3")
    assert "attack job 3 does not exist: deit_s (supervised) runs as 3 job(s)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_chunked_run_matches_the_one_by_one_run(setup, tmp_path):
    """chunk 3: every optimisation attack optimises the 3 images in one objective; per image the
    reconstructions match the chunk-1 run to float32 tolerance (3 iterations: < 1e-4 in [0, 1])."""
    tmp, params_file, _, weights = setup
    one = _outputs(_run_job(tmp, params_file, weights, "mjp", tmp_path / "one"))
    chunked_dir = tmp_path / "chunked"
    argv = ["attack", "run", "--params", str(params_file), *sum((["--set", o] for o in OVERRIDES), []),
            "--set", 'scales={"tiny": {"attacks": {"chunk": 3}}}', "--experiment", "mjp", "--kind", "supervised",
            "--weights", str(weights["mjp"]), "--out", str(chunked_dir / "attacks.json"),
            "--table", str(chunked_dir / "images.csv"), "--recon", str(chunked_dir / "reconstructions.safetensors"),
            "--images", "3", "--iterations", "3", "--device", "cpu"]
    assert main(argv) == 0
    chunked = _outputs(chunked_dir)
    assert chunked[0]["attack_chunk"] == 3 and one[0]["attack_chunk"] == 1
    optimised = ["inverting_gradients", "gradvit"]  # the closed forms solve each image alone
    table, one_table = (t[t["attack"].isin(optimised)] for t in (chunked[1], one[1]))
    assert set(one_table["info_batched"]) == {1} and (table[table["mode"] == "plain"]["info_batched"] == 3).all()
    # shuffled: an image whose draw moved no patch has no unknown-PE mask, so it gets its own objective
    shuffled = table[table["mode"] == "shuffled"]
    masked = shuffled["n_detected"] > 0
    assert ((shuffled["info_batched"] == masked.sum() / 2) | ~masked).all()
    assert ((shuffled["info_batched"] == (~masked).sum() / 2) | masked).all()
    for key in one[2]:
        assert float((one[2][key] - chunked[2][key]).abs().max()) < 1e-4, key
    assert (one[1]["psnr"] - chunked[1]["psnr"]).abs().max() < 0.01


def test_finetuned_classifier_is_attacked_generically(setup):
    from vitpe.runs import encoder_run

    tmp, params_file, params, weights = setup
    path = tmp / "ckpt" / "mae" / "model.safetensors"
    save_weights(build_model(encoder_run(params, "mae", "finetune")), path)  # global-pool MAE classifier
    metrics, table = _attack(tmp, params_file, {"mae": path}, "mae", "finetuned")
    assert metrics["kind"] == "finetuned" and metrics["threat_dal_weight"] == 0.0 and len(table) == 16
    # its learnable PE table (global pooling, no CLS readout) gives the closed form the fed image
    assert (table[table["attack"] == "pe_gradient"]["psnr_fed"] > 30).all()
    assert (table["n_detected"] == 0).all()  # no unknown PE: nothing to detect in either client mode


def test_attack_settings_validate_names(setup):
    _, _, params, _ = setup
    settings = attack_settings(params)
    assert settings.ig.iterations == params["scales"]["tiny"]["attacks"]["iterations"]["inverting_gradients"]
    assert settings.attacks_for("april") == ("april", "april_adaptive")
    bad = {**params, "attacks": {**params["attacks"], "april_models": ["deit_s"]}}
    with pytest.raises(ConfigError, match="not APRIL-compatible"):
        attack_settings(bad)


def test_params_wire_the_april_variants_and_the_schema_refuses_unknown_keys(tmp_path):
    params = load_params(ROOT / "params.yaml")
    assert supervised_run(params, "mjp_april").first_block == "april"
    assert supervised_run(params, "mjp").first_block == "standard"
    assert set(params["attacks"]["april_models"]).isdisjoint(params["experiments"]["supervised"])
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["attacks"]["threat"]["labels"] = "guessed"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="attacks.threat.labels"):
        load_params(path)


def test_workflow_attacks_every_model(workflow_copy):
    """The DAG plans one attack job per attacked model (fine-tuned ones only for built pretraining
    experiments), the comparison and the three figures, all feeding main.tex."""
    proc = run([str(BIN / "snakemake"), "-n", "results/tables/main.tex"], workflow_copy)
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    params = load_params(workflow_copy / "params.yaml")
    cfg = params["attacks"]
    finetuned = [e for e in cfg["finetuned"] if e in params["experiments"].get("pretrain", [])]
    seeds = len(params["scales"]["tiny"]["seeds"])  # every model is attacked once per seed
    assert counts["attack_model"] == seeds * (len(cfg["models"]) + len(cfg["april_models"]) + len(finetuned))
    assert counts["attack_compare"] == seeds  # one seed's paired per-image comparisons each
    assert counts["figure_attack_grid"] == counts["figure_attack_grid_april"] == 1
    assert counts["figure_attack_psnr"] == counts["figure_attack_privacy"] == 1
    bad = run([str(BIN / "snakemake"), "-n", "--config", "attacks={\"april_models\": [\"deit_s\"]}"],
              workflow_copy, check=False)
    assert bad.returncode != 0 and "not APRIL-compatible" in bad.stderr + bad.stdout


def test_workflow_splits_each_model_into_jobs_with_budgeted_runtimes(workflow_copy):
    """jobs: 2 -> two attack jobs and one merge per optimisation-attacked model (the APRIL variants stay
    one job); each job requests the runtime of its budget; a budget over the job limit stops the DAG."""
    params_file = workflow_copy / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    raw["scales"]["tiny"]["attacks"].update(jobs=2)
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run([str(BIN / "snakemake"), "-n", "results/tables/main.tex"], workflow_copy)
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    params = load_params(params_file)
    cfg = params["attacks"]
    optimised = len(cfg["models"]) + len([e for e in cfg["finetuned"] if e in params["experiments"]["pretrain"]])
    seeds = len(params["scales"]["tiny"]["seeds"])
    assert counts["attack_job"] == 2 * optimised * seeds and counts["attack_merge"] == optimised * seeds
    assert counts["attack_model"] == len(cfg["april_models"]) * seeds
    assert "results/attacks/tiny/seed0/deit_s/job_1/images.csv" in proc.stdout
    # the requested runtime is the budget's (tiny: 10 min of overhead + seconds of iterations)
    from vitpe.attacks.budget import attack_job_estimate, jobs_needed

    minutes = attack_job_estimate(params, "deit_s", "supervised", "cpu").minutes
    block = proc.stdout[proc.stdout.index("wildcards: seed=0, exp=deit_s, job=0"):]
    assert f"runtime={minutes}," in block.splitlines()[1] and minutes < 15

    raw["scales"]["tiny"]["attacks"].update(jobs=1, iterations={"inverting_gradients": 1500, "gradvit": 1500})
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    over = load_params(params_file)
    need = jobs_needed(over, "deit_s", "supervised", "cpu", 15)
    assert need is not None and need > 1  # the 15-min tiny limit: fits only when split
    bad = run([str(BIN / "snakemake"), "-n", "results/tables/main.tex"], workflow_copy, check=False)
    assert bad.returncode != 0
    assert re.search(r"one attack job of deit_s needs about \d+ min, over the 15-min job limit; "
                     rf"set scales.tiny.attacks.jobs to {need} or more", bad.stderr + bad.stdout)
