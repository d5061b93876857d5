"""A run folder is one run: one writer at a time, built aside and moved into place, replaced only
with overwrite (the old run intact until then), resumed only with its own settings, sealed by run.json."""

import json
import os

import pytest

from choicegrad.errors import InputError
from choicegrad.runfolder import MANIFEST, RunLock, RunWriter, foreign_files, verify_run

REQ = {"command": "fit", "data": "t.csv", "scorer_fit": {"seed": 0, "max_minutes": 1.0}}


def write_run(out, request=REQ, text="new", **kw):
    with RunWriter(out, request, **kw) as w:
        (w.dir / "scorer.json").write_text(text)
        w.commit()
    return w


def test_second_writer_is_refused_with_owner(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(InputError, match=rf"being written by another choicegrad process \(pid {os.getpid()} on host"):
            write_run(out)
    assert not out.exists() and not (tmp_path / ".run.partial").exists()
    write_run(out)                                     # released: the next writer gets in
    assert (out / "scorer.json").read_text() == "new"
    assert not (tmp_path / ".run.lock").exists()


def test_a_finished_run_is_sealed_and_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "run"
    write_run(out, text="old")
    manifest = verify_run(out)
    assert set(manifest["files"]) == {"scorer.json"} and manifest["request"] == REQ
    with pytest.raises(InputError, match="already holds a run; pass overwrite=True"):
        write_run(out)
    assert (out / "scorer.json").read_text() == "old"
    write_run(out, overwrite=True)
    assert (out / "scorer.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]   # no lock, partial or old copy left


def test_an_interrupted_overwrite_leaves_the_old_run_intact(tmp_path):
    out = tmp_path / "run"
    write_run(out, text="old")
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(out, REQ, overwrite=True) as w:
            (w.dir / ".checkpoint").mkdir()           # some work worth resuming
            raise KeyboardInterrupt
    assert (out / "scorer.json").read_text() == "old" and verify_run(out)
    with pytest.raises(InputError, match="interrupted run .* pass resume=True to continue it, or overwrite=True"):
        write_run(out)
    w = write_run(out, resume=True)                   # the resumed overwrite completes the replacement
    assert w.resuming and (out / "scorer.json").read_text() == "new"


def test_a_failure_before_any_work_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError):
        with RunWriter(out, REQ):
            raise InputError("table", ["bad"])
    assert list(tmp_path.iterdir()) == []


def test_resume_needs_the_same_settings_except_time(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(out, REQ) as w:
            (w.dir / "scorer.json").write_text("phase 1")
            raise KeyboardInterrupt
    other = {**REQ, "scorer_fit": {"seed": 1, "max_minutes": 1.0}}
    with pytest.raises(InputError, match=r"started with other settings(.|\n)*scorer_fit.seed: 0 -> 1"):
        write_run(out, request=other, resume=True)
    more_time = {**REQ, "scorer_fit": {"seed": 0, "max_minutes": 5.0}}
    with RunWriter(out, more_time, resume=True) as w:
        assert w.resuming and (w.dir / "scorer.json").read_text() == "phase 1"
        w.commit()


def test_a_run_started_before_a_setting_existed_resumes_with_its_old_value(tmp_path):
    """The settings added since (declared by the fit that writes them: choicegrad.run.ADDED_SETTINGS)
    compare as the value an older run had."""
    from choicegrad.run import ADDED_SETTINGS

    out = tmp_path / "run"
    before = {**REQ, "generator_fit": {"seed": 0}}                    # written before amortised search existed
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(out, before, added_settings=ADDED_SETTINGS) as w:
            (w.dir / "scorer.json").write_text("phase 1")
            raise KeyboardInterrupt
    now = {**REQ, "generator_fit": {"seed": 0, "distill": None, "distill_sweeps": 2}}
    with pytest.raises(InputError, match=r"generator_fit.distill: 0.0 -> None"):
        write_run(out, request=now, resume=True, added_settings=ADDED_SETTINGS)
    off = {**REQ, "generator_fit": {"seed": 0, "distill": 0.0, "distill_sweeps": 2}}
    with RunWriter(out, off, resume=True, added_settings=ADDED_SETTINGS) as w:   # distill 0: the run as started
        assert w.resuming


def test_a_run_started_before_the_scorer_options_resumes_at_their_defaults(tmp_path):
    from choicegrad.run import ADDED_SETTINGS
    from choicegrad.scorer.fit import ScorerFit

    out = tmp_path / "run"
    now = ScorerFit().model_dump()
    before = {**now, "model": {k: v for k, v in now["model"].items() if k != "activation"}}
    del before["keep"]
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(out, {**REQ, "scorer_fit": before}, added_settings=ADDED_SETTINGS) as w:
            (w.dir / "scorer.json").write_text("phase 1")
            raise KeyboardInterrupt
    with pytest.raises(InputError, match=r"scorer_fit.keep: 'best' -> 'last'"):
        write_run(out, request={**REQ, "scorer_fit": {**now, "keep": "last"}}, resume=True, added_settings=ADDED_SETTINGS)
    with RunWriter(out, {**REQ, "scorer_fit": now}, resume=True, added_settings=ADDED_SETTINGS) as w:
        assert w.resuming


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    out = tmp_path / "run"
    write_run(out, text="done")
    with RunWriter(out, REQ, resume=True) as w:
        assert w.finished and "already finished" in w.notes[0]
    assert (out / "scorer.json").read_text() == "done"
    w = write_run(tmp_path / "fresh", resume=True)    # nothing to resume: starts from the beginning
    assert "starting from the beginning" in w.notes[0]


def test_a_swap_cut_between_its_renames_is_repaired(tmp_path):
    out = tmp_path / "run"
    write_run(out, text="old")
    partial = tmp_path / ".run.partial"
    write_run(tmp_path / "staged", text="new")        # a complete run, as the cut swap left it
    os.replace(tmp_path / "staged", partial)
    os.replace(out, tmp_path / ".run.old-0123456789ab")        # the first rename happened, the second did not
    with RunWriter(out, REQ, resume=True) as w:
        assert w.finished
    assert (out / "scorer.json").read_text() == "new" and not (tmp_path / ".run.old-0123456789ab").exists()


def test_verify_refuses_changed_and_foreign_files(tmp_path):
    out = tmp_path / "run"
    write_run(out)
    (out / "scorer.json").write_text("from another run")
    with pytest.raises(InputError, match="scorer.json does not belong to run"):
        verify_run(out)
    (out / "scorer.json").write_text("new")
    (out / "generator.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="generator.safetensors is not part of run"):
        verify_run(out)
    (out / "generator.safetensors").unlink()
    (out / MANIFEST).write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match="unreadable run manifest"):
        verify_run(out)


def test_each_kind_of_folder_declares_the_files_readers_check(tmp_path):
    """The run folder knows no designer file: the designer's state declares its own (STATE_FILES),
    checked against run.json like a run's models, and named in a state written before run.json."""
    from choicegrad.design.designer import STATE_FILES

    out = tmp_path / "state"
    with RunWriter(out, REQ, files=STATE_FILES) as w:
        (w.dir / "scorer.json").write_text("new")
        (w.dir / "designer.json").write_text("{}")
        w.commit()
    (out / "designer.json").write_text('{"rounds": 9}')
    assert verify_run(out)                                 # a fitted run's readers do not read it
    with pytest.raises(InputError, match="designer.json does not belong to run"):
        verify_run(out, STATE_FILES)
    legacy = tmp_path / "legacy"                            # written before run.json: names of the kind only
    legacy.mkdir()
    for name in ("scorer.json", "designer.json"):
        (legacy / name).write_text("{}")
    assert foreign_files(legacy) == ["designer.json"] and foreign_files(legacy, STATE_FILES) == []


def test_out_that_is_a_file_or_unwritable(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        write_run(tmp_path / "f")
    with pytest.raises(InputError, match="cannot create the folder"):
        write_run(tmp_path / "f" / "run")              # a parent that is a file: fails before any work


def test_a_run_respects_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_run(tmp_path / "run")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "run", *(tmp_path / "run").iterdir()]}
    assert modes == {"run": 0o750, "scorer.json": 0o640, MANIFEST: 0o640}


def test_a_partial_killed_before_its_request_is_started_over(tmp_path):
    (tmp_path / ".run.partial").mkdir()
    w = write_run(tmp_path / "run")
    assert not w.resuming and (tmp_path / "run" / "scorer.json").is_file()
