"""Checkpoints that are not what they claim: a pickle that would run code, files that are not
checkpoints at all, and real torch files with the wrong keys or shapes. Every loader (UNet, viseme
model, Whisper, SyncNet, VAE) refuses each with one WeightsError naming the file, and no pickled
code ever runs. Plus a guard that every ``torch.load`` in the repository passes ``weights_only=True``."""

from __future__ import annotations

import ast
import json
import pathlib
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from realtime.errors import WeightsError

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this writes ``marker``: what an unsafe ``torch.load`` would do with a hostile file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "code ran")


def hostile_files(d: Path, marker: Path) -> dict[str, Path]:
    """Files a user might be handed as a checkpoint, none of them a valid one."""
    d.mkdir(parents=True, exist_ok=True)
    files = {"zip_pickle": d / "zip_pickle.pt", "legacy_pickle": d / "legacy_pickle.pt", "raw_pickle": d / "raw.pt",
             "random": d / "random.pt", "text": d / "text.pt", "empty": d / "empty.pt"}
    # the payload where each loader looks first, and in a tensor's place
    torch.save({"state_dict": {"w": Payload(marker)}, "dims": Payload(marker), "config": Payload(marker),
                "model_state_dict": Payload(marker)}, files["zip_pickle"])
    torch.save({"state_dict": Payload(marker)}, files["legacy_pickle"], _use_new_zipfile_serialization=False)
    with open(files["raw_pickle"], "wb") as f:
        pickle.dump(Payload(marker), f)
    files["random"].write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                              dtype=torch.uint8).numpy().tobytes())
    files["text"].write_text("model weights: see https://example.invalid/weights\n" * 20)
    files["empty"].write_bytes(b"")
    return files


def load_unet_file(path: Path, d: Path):
    from models.unet import tiny_config
    from realtime.unet_loader import load_unet

    config = d / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_config()}))
    return load_unet(path, config)


def load_visemes_file(path: Path, d: Path):
    from realtime.visemes.runtime import VisemePredictor

    return VisemePredictor.load(path=path)


def load_whisper_file(path: Path, d: Path):
    from realtime.audio.whisper_loader import load_whisper

    return load_whisper(path)


def load_syncnet_file(path: Path, d: Path):
    from realtime.evaluate.sync import load_syncnet

    return load_syncnet(path)


def load_vae_file(path: Path, d: Path):
    from realtime.render.vae_loader import load_vae

    vae = d / f"vae_{path.stem}"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}))
    (vae / "diffusion_pytorch_model.bin").write_bytes(path.read_bytes())
    return load_vae(vae)


LOADERS = {"unet": load_unet_file, "visemes": load_visemes_file, "whisper": load_whisper_file,
           "syncnet": load_syncnet_file, "vae": load_vae_file}


def refused(load, path: Path, d: Path) -> str:
    with pytest.raises(WeightsError) as info:
        load(path, d)
    message = str(info.value)
    named = path.name if load is not load_vae_file else f"vae_{path.stem}"  # the VAE is named by its folder
    assert named in message and "\n" not in message.strip() and "\x1b" not in message, message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    return message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the raw pickle.dump file
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_no_loader_runs_a_pickled_payload_or_takes_a_file_that_is_not_a_checkpoint(tmp_path, loader):
    marker = tmp_path / "marker"
    files = hostile_files(tmp_path / "files", marker)
    for kind, path in files.items():
        message = refused(LOADERS[loader], path, tmp_path)
        assert not marker.exists(), f"{loader} ran the code pickled in {kind}"
        if loader != "vae":  # diffusers words the VAE's refusal itself
            assert ("could run code" in message) == (kind in ("zip_pickle", "legacy_pickle")), message


def test_unet_checkpoint_with_wrong_keys_and_shapes_names_them(tmp_path):
    from models.unet import UNet3DConditionModel, tiny_config

    sd = UNet3DConditionModel.from_config(tiny_config()).state_dict()
    sd.pop("conv_in.bias")
    sd["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
    sd["unknown.weight"] = torch.zeros(2)
    path = tmp_path / "unet.pt"
    torch.save({"state_dict": sd}, path)
    message = refused(load_unet_file, path, tmp_path)
    assert "1 missing (conv_in.bias)" in message and "1 unexpected (unknown.weight)" in message
    assert "conv_out.weight: checkpoint [4, 32, 1, 1]" in message
    torch.save({"state_dict": {"conv_in.weight": "not a tensor"}}, path)  # allowed by weights_only, still wrong
    assert "no state dict of tensors" in refused(load_unet_file, path, tmp_path)


def test_viseme_checkpoint_with_wrong_keys_or_shapes_is_refused(tmp_path):
    from realtime.visemes.runtime import weights_path

    good = torch.load(weights_path("full"), map_location="cpu", weights_only=True)
    key = next(iter(good["state_dict"]))
    renamed = {**good, "state_dict": {("x" + k if k == key else k): v for k, v in good["state_dict"].items()}}
    reshaped = {**good, "state_dict": {**good["state_dict"], key: torch.zeros(3, 3)}}
    no_config = {k: v for k, v in good.items() if k != "config"}
    for name, ckpt in (("renamed", renamed), ("reshaped", reshaped), ("no_config", no_config),
                       ("bare", good["state_dict"])):
        path = tmp_path / f"visemes_{name}.pt"
        torch.save(ckpt, path)
        refused(load_visemes_file, path, tmp_path)


def test_whisper_checkpoint_whose_weights_do_not_match_its_dims_is_refused(tmp_path):
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(80, 1500, 16, 2, 2, 10, 4, 16, 2, 1)
    sd = {k: v for k, v in Whisper(dims).state_dict().items() if k != "alignment_heads"}
    path = tmp_path / "whisper.pt"
    torch.save({"dims": {**dims.__dict__, "n_audio_state": 32}, "model_state_dict": sd}, path)
    assert "does not match its own dims" in refused(load_whisper_file, path, tmp_path)
    torch.save({"model_state_dict": sd}, path)
    assert "lacks 'dims'" in refused(load_whisper_file, path, tmp_path)


def _torch_loads(tree: ast.AST):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
            yield node


def test_every_torch_load_in_the_repository_is_weights_only():
    unsafe, found = [], 0
    for folder in ("realtime", "models", "scripts", "clients", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for call in _torch_loads(ast.parse(path.read_text(), str(path))):
                found += 1
                kw = {k.arg: k.value for k in call.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    unsafe.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert found >= 6 and not unsafe, unsafe
