"""The layout table names exactly what transformers holds and writes; every layout loads; a
tensor no layout names is an error that says which layouts were tried."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.inventory import CheckpointError, expected_tensors
from flashbeam.model.checkpoint.layouts import layout_named, stored_name
from flashbeam.model.checkpoint.loading import load_model, load_state_dict
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.checkpoint.reader import CheckpointReader
from flashbeam.model.checkpoint.saving import save_checkpoint

PRESETS = ["tiny", "tiny-rates"]  # every tensor kind; CSA and HCA at default and other rates


def layout_names(config, name: str) -> set[str]:
    out = set()
    for official in expected_tensors(config):
        stored = stored_name(official, layout_named(name))
        out.add(stored if isinstance(stored, str) else stored[0].name)
    return out


def stored_names(directory: Path) -> set[str]:
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.fixture(scope="module", params=PRESETS)
def theirs(request):
    transformers = pytest.importorskip("transformers")
    config = tiny_config(request.param)
    hf = transformers.DeepseekV4Config(**config.to_official_dict())
    return config, transformers.DeepseekV4ForCausalLM(hf)


def test_table_names_what_transformers_holds(theirs):
    config, model = theirs
    assert set(model.state_dict()) == layout_names(config, "hf")


def test_table_names_what_transformers_save_pretrained_writes(theirs, tmp_path):
    config, model = theirs
    model.save_pretrained(tmp_path)
    names = stored_names(tmp_path)
    assert names == layout_names(config, "hf-saved")
    # the official names under "model.", but for the rules transformers cannot invert
    prefixed = {"model." + n for n in expected_tensors(config)}
    exceptions = names - prefixed
    assert exceptions == {
        "head.weight",
        "model.embed_tokens.weight",
        "model.hc_head.hc_fn",
        "model.hc_head.hc_base",
        "model.hc_head.hc_scale",
    } | {f"model.layers.{i}.attn.norm.weight" for i in range(config.num_hidden_layers)}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("layout", ["official", "hf", "hf-saved"])
def test_every_layout_round_trips_exactly(preset, layout, tmp_path):
    model = random_model(tiny_config(preset), seed=0)
    directory = save_checkpoint(model, tmp_path, layout=layout)
    assert stored_names(directory) == layout_names(model.config, layout)
    with CheckpointReader(directory, model.config) as reader:
        assert reader.layout == layout
    state = load_state_dict(directory, model.config)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], t) for k, t in model.state_dict().items())
    assert load_model(directory).config == model.config


def test_unknown_tensor_names_itself_its_file_and_the_layouts_tried(tmp_path):
    model = random_model(tiny_config("tiny"), seed=0)
    directory = save_checkpoint(model, tmp_path, layout="hf-saved")
    path = directory / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.0.attn.bogus.weight"] = torch.zeros(2)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        load_state_dict(directory, model.config)
    message = str(info.value)
    total = len(tensors)
    for needle in (
        f"unknown tensor 'model.layers.0.attn.bogus.weight' in {path}",
        "in the hf-saved layout",
        f"hf-saved {total - 1}/{total}",
        "official 1/",  # head.weight
        "official (under 'model.') ",
        "hf ",
    ):
        assert needle in message, message


def test_scales_are_not_read_in_the_saved_transformers_layout(tmp_path):
    """Quantized weights are read in the official layout only: a scale here is unknown, never
    silently dropped."""
    model = random_model(tiny_config("tiny"), seed=0)
    directory = save_checkpoint(model, tmp_path, layout="hf-saved")
    path = directory / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.0.attn.wq_a.scale"] = torch.ones(1, 1)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"unknown tensor 'model\.layers\.0\.attn\.wq_a\.scale'"
    ):
        load_state_dict(directory, model.config)
