"""Progress output: every human line starts with the UTC time; the per-step JSONL log is unchanged."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from vitpe.train.progress import StepLogger, print_stamped, stamp

STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")


@pytest.fixture(autouse=True)
def far_time_zone(monkeypatch):
    """A local time zone 5 h 45 min from UTC, so a stamp in local time fails the checks below."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _split(line: str) -> tuple[datetime, str]:
    match = STAMPED.match(line)
    assert match, f"not a timestamped line: {line!r}"
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc), match.group(2)


def _assert_now_utc(when: datetime) -> None:
    # UTC, not local time: within a few seconds of the UTC clock whatever the machine's time zone
    assert abs(datetime.now(timezone.utc) - when) < timedelta(seconds=5)


def test_stamp_prefixes_the_utc_time():
    when, text = _split(stamp("synth: done"))
    assert text == "synth: done"
    _assert_now_utc(when)


def test_step_logger_lines_are_timestamped_and_the_jsonl_is_not(tmp_path, capsys):
    records = [{"step": step, "epoch": 0, "loss": 2.0 / step, "lr": 1e-3, "grad_norm": 0.5, "imgs_per_s": 10.0}
               for step in (1, 2)]
    logger = StepLogger(tmp_path / "log.jsonl", total_steps=2, resume_step=None, print_every=1)
    logger.message("training 2 steps")
    for record in records:
        logger.log(record)
    logger.close()
    lines = capsys.readouterr().err.splitlines()
    texts = [_split(line)[1] for line in lines]
    assert texts == ["training 2 steps",
                     "step 1/2 epoch 0 loss 2.0000 lr 1.000e-03 grad_norm 0.500 10.0 img/s",
                     "step 2/2 epoch 0 loss 1.0000 lr 1.000e-03 grad_norm 0.500 10.0 img/s"]
    _assert_now_utc(_split(lines[0])[0])
    # the records DVC plots and the figures read: exactly json.dumps of each record, no timestamp added
    assert (tmp_path / "log.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in records)


def test_print_stamped_goes_to_stdout_by_default(capsys):
    print_stamped("check: coco (data/coco): ok")
    out, err = capsys.readouterr()
    assert err == "" and _split(out.rstrip("\n"))[1] == "check: coco (data/coco): ok"


def test_a_resumed_dvclive_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """A run killed at step 5 whose last checkpoint is step 3 logs steps 4 and 5 again when it resumes."""
    def run(steps, resume_step):
        logger = StepLogger(tmp_path / "log.jsonl", total_steps=5, resume_step=resume_step, enabled=True,
                            live_dir=tmp_path / "dvclive")
        for step in steps:
            logger.log({"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 0.1, "grad_norm": 1.0, "imgs_per_s": 1.0})
        logger.validation({"step": steps[-1], "epoch": 0, "validation": {"top1": float(steps[-1])}})
        logger.close()

    run([1, 2, 3, 4, 5], None)
    run([4, 5], 3)
    loss = (tmp_path / "dvclive/plots/metrics/train/loss.tsv").read_text()
    assert loss == "step\tloss\n" + "".join(f"{s}\t{1.0 / s!r}\n" for s in range(1, 6))
    assert (tmp_path / "dvclive/plots/metrics/val/top1.tsv").read_text() == "step\ttop1\n5\t5.0\n"
    run([1, 2], None)  # a new run starts an empty folder
    assert (tmp_path / "dvclive/plots/metrics/train/loss.tsv").read_text().count("\n") == 3


def test_a_resumed_logger_repairs_the_dvclive_files_a_kill_cut_short(tmp_path):
    """A kill can leave dvclive's metrics.json empty and a TSV's last row half written; the resumed run
    keeps the rows up to its checkpoint, rebuilds the summary from them and logs on."""
    def record(step: int) -> dict:
        return {"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 1e-3, "grad_norm": 0.5, "imgs_per_s": 10.0}

    live = tmp_path / "dvclive"
    logger = StepLogger(tmp_path / "log.jsonl", total_steps=4, resume_step=None, live_dir=live)
    for step in (1, 2, 3):
        logger.log(record(step))
    logger.validation({"step": 2, "epoch": 0, "validation": {"top1": 40.0}})
    (live / "metrics.json").write_text("")  # the kill: the summary cut to nothing ...
    loss = live / "plots" / "metrics" / "train" / "loss.tsv"
    loss.write_text(loss.read_text() + "4\t0.2")  # ... and a row past the checkpoint cut mid-line

    resumed = StepLogger(tmp_path / "log.jsonl", total_steps=4, resume_step=2, live_dir=live)
    assert json.loads((live / "metrics.json").read_text()) == {
        "train": {"loss": 0.5, "lr": 1e-3, "grad_norm": 0.5, "imgs_per_s": 10.0}, "val": {"top1": 40.0}, "step": 2}
    for step in (3, 4):
        resumed.log(record(step))
    resumed.close()
    assert loss.read_text() == "step\tloss\n1\t1.0\n2\t0.5\n3\t0.3333333333333333\n4\t0.25\n"
    assert json.loads((live / "metrics.json").read_text())["train"]["loss"] == 0.25
