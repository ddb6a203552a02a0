import json

import pytest
import torch
import yaml

from realtime.cli import main
from realtime.unet_config import load_unet_config
from realtime.unet_loader import load_unet


def _distill(teacher, data, config, out, *extra):
    ckpt, unet_yaml = teacher
    return main(["distill", "--teacher", str(ckpt), "--teacher-config", str(unet_yaml), "--data", str(data),
                 "--config", str(config), "--out", str(out), "--no-progress", *extra])


def test_distill_end_to_end_and_resume(tmp_path, random_teacher, synthetic_data, small_config, capsys):
    full = tmp_path / "full"
    assert _distill(random_teacher, synthetic_data, small_config, full) == 0
    printed = capsys.readouterr().out
    assert "student" in printed and "4 steps" in printed and "--steps 2 --guidance 1" in printed

    # outputs: student in LatentSync's layout + its YAML, the log, the kept checkpoints
    student_yaml = load_unet_config(full / "student.yaml")
    assert student_yaml.run.inference_steps == 2 and student_yaml.run.guidance_scale == 1.0
    assert student_yaml.model_dict() == load_unet_config(random_teacher[1]).model_dict()
    student = load_unet(full / "student.pt", full / "student.yaml")
    teacher = load_unet(*random_teacher)
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(), teacher.state_dict().values()))
    saved = torch.load(full / "student.pt", weights_only=True)
    assert set(saved) == {"state_dict", "global_step"} and saved["global_step"] == 4
    lines = [json.loads(ln) for ln in (full / "train_log.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]
    assert all(ln["loss"] > 0 and ln["segments"] and ln["eval_loss"] > 0 for ln in lines)
    assert set().union(*(ln["segments"] for ln in lines)) <= {"k1:999->end", "k2:999->499", "k2:499->end"}
    ckpts = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert ckpts == ["step_0000002.pt", "step_0000002.state.pt", "step_0000004.pt", "step_0000004.state.pt"]
    used = yaml.safe_load((full / "distill.yaml").read_text())
    assert used["train"]["pool_size"] == 8 and used["teacher"]["config"] == str(random_teacher[1])

    # 2 steps, then --resume to 4: the same weights and log as 4 steps in one go
    part = tmp_path / "part"
    assert _distill(random_teacher, synthetic_data, small_config, part, "--max-steps", "2") == 0
    assert _distill(random_teacher, synthetic_data, small_config, part, "--resume") == 0
    resumed = torch.load(part / "student.pt", weights_only=True)["state_dict"]
    for k, v in saved["state_dict"].items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=1e-6, msg=k)
    losses = [json.loads(ln)["loss"] for ln in (part / "train_log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([ln["loss"] for ln in lines], rel=1e-4)
    evals = [json.loads(ln)["eval_loss"] for ln in (part / "train_log.jsonl").read_text().splitlines()]
    assert evals == pytest.approx([ln["eval_loss"] for ln in lines], rel=1e-4)


@pytest.mark.parametrize("case, message", [
    ("teacher", "teacher checkpoint"),
    ("data", "no dataset.json"),
    ("key", "unknown key 'train.lrr'"),
    ("rerun", "already holds a distillation run; pass --resume"),
    ("resume", "holds no checkpoint to resume from"),
])
def test_distill_errors_are_one_line(tmp_path, random_teacher, synthetic_data, small_config, capsys, case, message):
    teacher, data, config, out, extra = random_teacher, synthetic_data, small_config, tmp_path / "out", []
    if case == "teacher":
        teacher = (tmp_path / "missing.pt", random_teacher[1])
    elif case == "data":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "key":
        config = tmp_path / "bad.yaml"
        config.write_text(small_config.read_text().replace("lr:", "lrr:"))
    elif case == "rerun":
        (out / "checkpoints").mkdir(parents=True)
        (out / "distill.yaml").write_text("{}")
    elif case == "resume":
        extra = ["--resume"]
    assert _distill(teacher, data, config, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("syncvid distill: error:") and "\n" not in err
