"""Quantized weights kept packed (the GPU load path), exercised on CPU with keep_quantized=True."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flashbeam import kernels
from flashbeam.kernels._triton import HAS_TRITON
from flashbeam.model import Engine, Request, Tokenizer, tiny_config
from flashbeam.model.checkpoint.formats import (
    QuantizedWeight,
    fp4_packed_shape,
    fp4_scale_shape,
    fp8_scale_shape,
)
from flashbeam.model.checkpoint.inventory import CheckpointError, expected_tensors, quantized_format
from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.checkpoint.packed import check_fits, held_bytes
from flashbeam.model.checkpoint.random_init import random_model, write_random_checkpoint
from flashbeam.model.checkpoint.reader import CheckpointEntry, CheckpointReader, StoredTensor
from flashbeam.model.checkpoint.saving import save_checkpoint
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.quantized import FP8Linear, PackedExperts

QUANTIZE = ["fp8", "fp8+fp4"]
OFFICIAL_CONFIG = Path(__file__).parents[1] / "data" / "official" / "config.json"
FP8_LINEARS = ("attn.wq_a", "attn.wq_b", "attn.wkv", "attn.wo_a", "attn.wo_b")
# Packed and dequantized loads hold bit-identical weight values and run the same fp32 math; only
# summation order differs (the dense MoE sums all experts in one einsum for few tokens, the fused
# MoE reference loops over chosen experts). Measured: <= 1.2e-6 of the largest logit.
LOGIT_TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=QUANTIZE)
def checkpoint(request, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    return write_random_checkpoint(directory, tiny_config("tiny"), quantize=request.param)


@pytest.fixture(scope="module")
def packed(checkpoint):
    return load_model(checkpoint, keep_quantized=True)


@pytest.fixture(scope="module")
def dense(checkpoint):
    return load_model(checkpoint, keep_quantized=False)


def tokens(vocab: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def assert_logits_close(got: torch.Tensor, want: torch.Tensor) -> None:
    err = (got - want).abs().max() / want.abs().max()
    assert err <= LOGIT_TOL, f"max logit difference {err:.2e} of the largest logit"


# ---- what the packed model holds -----------------------------------------------------------
def test_packed_model_holds_the_checkpoint_bytes(checkpoint, packed):
    config = packed.config
    raw = load_file(checkpoint / "model.safetensors")
    fp4 = raw["layers.0.ffn.experts.0.w1.weight"].dtype == torch.int8
    for layer, block in enumerate(packed.layers):
        attn, ffn = block.attn, block.ffn
        linears = [f"layers.{layer}.{n}" for n in FP8_LINEARS]
        linears += [f"layers.{layer}.ffn.shared_experts.w{i}" for i in (1, 2, 3)]
        if attn.indexer is not None:
            linears.append(f"layers.{layer}.attn.indexer.wq_b")
        for name in linears:
            module = packed.get_submodule(name)
            assert isinstance(module, FP8Linear), name
            assert module.weight.dtype == torch.float8_e4m3fn
            assert module.scale.dtype == torch.float8_e8m0fnu
            assert torch.equal(
                module.weight.view(torch.uint8), raw[name + ".weight"].view(torch.uint8)
            )
            assert torch.equal(
                module.scale.view(torch.uint8), raw[name + ".scale"].view(torch.uint8)
            )
        experts = ffn.experts
        assert isinstance(experts, PackedExperts)
        assert experts.weights.fmt == ("fp4" if fp4 else "fp8")
        E, I, D = config.n_routed_experts, config.moe_intermediate_size, config.hidden_size
        assert experts.w1.shape == (E, I, D // 2 if fp4 else D)
        assert experts.w2.dtype == (torch.int8 if fp4 else torch.float8_e4m3fn)
        for e in (0, E - 1):
            stored = raw[f"layers.{layer}.ffn.experts.{e}.w2.weight"]
            assert torch.equal(experts.w2[e].view(torch.uint8), stored.view(torch.uint8))
        assert experts.weights.w2 is experts.w2  # the kernel reads the module's own tensors
    # Official names in the state dict for the FP8 linears; nothing of them dequantized.
    state = packed.state_dict()
    assert state["layers.1.attn.wq_a.weight"].dtype == torch.float8_e4m3fn
    assert state["layers.1.attn.wq_a.scale"].dtype == torch.float8_e8m0fnu
    dense_floats = {n for n, t in state.items() if t.dtype in (torch.float32, torch.bfloat16)}
    assert not any(".experts." in n or n.endswith(FP8_LINEARS) for n in dense_floats)


def test_packed_logits_match_the_dequantized_load(packed, dense):
    ids = tokens(packed.config.vocab_size, (2, 40))
    with torch.no_grad():
        assert_logits_close(packed(ids), dense(ids))


def test_engine_generates_the_same_tokens_packed_and_dense(checkpoint, packed, dense):
    tokenizer = Tokenizer.from_file(checkpoint)
    reqs = [
        Request(
            id=f"r{i}", prompt_token_ids=tokens(500, (1, 30 + 9 * i), i)[0].tolist(), max_tokens=5
        )
        for i in range(3)
    ]
    got = Engine(packed, tokenizer).generate(reqs)
    want = Engine(dense, tokenizer).generate(reqs)
    assert all(r.finish_reason in ("stop", "length") for r in got)
    assert sum(len(r.token_ids) for r in got) > 0
    assert [r.token_ids for r in got] == [r.token_ids for r in want]


def test_weight_memory_is_the_packed_size(checkpoint, packed, dense):
    with CheckpointReader(checkpoint, packed.config) as reader:
        entries = list(reader.entries.values())
    assert state_bytes(packed) == held_bytes(entries, torch.float32, keep_quantized=True)
    assert state_bytes(dense) == held_bytes(entries, torch.float32, keep_quantized=False)
    # Embeddings, head, mHC and compressors stay dense fp32 in this tiny model, so the ratio is
    # far from the real model's (~1/4 of bf16); the quantized part alone shrinks 4-8x.
    fp4 = packed.layers[0].ffn.experts.weights.fmt == "fp4"
    assert state_bytes(packed) < (0.45 if fp4 else 0.5) * state_bytes(dense)


# ---- the fit check -------------------------------------------------------------------------
def test_fit_check_raises_with_the_numbers(checkpoint, packed):
    with CheckpointReader(checkpoint, packed.config) as reader:
        entries = list(reader.entries.values())
    needed = held_bytes(entries, torch.float32, keep_quantized=True)
    device = torch.device("cuda", 0)
    check_fits(entries, torch.float32, True, needed, device, checkpoint)  # exactly enough
    with pytest.raises(CheckpointError) as err:
        check_fits(entries, torch.float32, True, needed - 1, device, checkpoint)
    msg = str(err.value)
    assert f"needs 0.00 GiB ({needed:,} bytes)" in msg
    assert f"has 0.00 GiB ({needed - 1:,} bytes) free" in msg
    assert "cuda:0" in msg and str(checkpoint) in msg and "smaller model" in msg
    with pytest.raises(CheckpointError, match=r"kept quantized \(keep_quantized=True\) it would"):
        check_fits(entries, torch.float32, False, needed, device, checkpoint)


def official_flash_entries(config: ModelConfig) -> list[CheckpointEntry]:
    """Header-level entries of the official V4-Flash files (spec §6.1): FP8 dense linears, FP4
    routed experts, the fp32 tensors fp32, everything else bf16."""
    file = Path("flash.safetensors")
    out = []
    for name, shape in expected_tensors(config).items():
        fmt = quantized_format(name, "fp8+fp4")
        scale_name = name.removesuffix(".weight") + ".scale"
        if fmt == "fp8":
            weight = StoredTensor(name, file, "F8_E4M3", shape)
            scale = StoredTensor(scale_name, file, "F8_E8M0", fp8_scale_shape(shape))
            out.append(CheckpointEntry(name, weight, "fp8", scale))
        elif fmt == "fp4":
            weight = StoredTensor(name, file, "I8", fp4_packed_shape(shape))
            scale = StoredTensor(scale_name, file, "F8_E8M0", fp4_scale_shape(shape))
            out.append(CheckpointEntry(name, weight, "fp4", scale))
        else:
            leaf = name.rsplit(".", 1)[-1]
            fp32 = leaf in ("attn_sink", "ape", "bias") or leaf.startswith("hc_")
            dtype = "I64" if leaf == "tid2eid" else "F32" if fp32 else "BF16"
            out.append(CheckpointEntry(name, StoredTensor(name, file, dtype, shape)))
    return out


def test_real_flash_needs_its_checkpoint_size_and_fails_on_an_80gb_gpu():
    entries = official_flash_entries(ModelConfig.from_file(OFFICIAL_CONFIG))
    size = {"F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "BF16": 2, "F32": 4, "I64": 8}

    def stored(t: StoredTensor) -> int:
        n = 1
        for s in t.shape:
            n *= s
        return n * size[t.dtype]

    on_disk = sum(stored(e.weight) + (stored(e.scale) if e.scale else 0) for e in entries)
    needed = held_bytes(entries, torch.bfloat16, keep_quantized=True)
    assert needed == on_disk  # the packed model holds exactly the checkpoint's bytes
    assert 140 < needed / 2**30 < 160
    dequantized = held_bytes(entries, torch.bfloat16, keep_quantized=False)
    assert dequantized > 3.5 * needed
    free = 79 * 2**30
    with pytest.raises(CheckpointError, match=rf"needs {needed / 2**30:.2f} GiB .* 79\.00 GiB"):
        check_fits(entries, torch.bfloat16, True, free, torch.device("cuda"), "/ckpt/V4-Flash")
    check_fits(entries, torch.bfloat16, True, needed, torch.device("cuda"), "/ckpt/V4-Flash")


# ---- the packed modules --------------------------------------------------------------------
def grouped_fp8(rows: int, groups: int, inputs: int) -> tuple[FP8Linear, torch.Tensor]:
    w = torch.randn(groups * rows, inputs, generator=torch.Generator().manual_seed(3)) / 8
    q = QuantizedWeight.quantize(w, "fp8")
    return FP8Linear(q.weight, q.scale), q.dequantize()


@pytest.mark.parametrize("rows", [128, 16], ids=["gemm-per-group", "dequantized"])
def test_grouped_projection_matches_the_dense_einsum(rows):
    linear, w = grouped_fp8(rows, groups=2, inputs=64)
    x = torch.randn(3, 4, 2, 64, generator=torch.Generator().manual_seed(4))
    want = torch.einsum("bsgi,gri->bsgr", x, w.view(2, rows, 64))
    torch.testing.assert_close(linear.grouped(x), want, rtol=1e-5, atol=1e-5)


needs_triton = pytest.mark.skipif(
    not HAS_TRITON or not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton on a GPU or in its interpreter",
)
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@needs_triton
def test_triton_kernels_read_the_packed_layout(packed):
    """The MoE of a packed layer (fused MoE + FP8 shared expert) and a grouped FP8 projection run
    by the Triton kernels (the GPU path) match the torch references."""
    moe = copy.deepcopy(packed.layers[2].ffn).to(TRITON_DEVICE)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, packed.config.hidden_size, generator=g).to(TRITON_DEVICE)
    ids = torch.randint(0, packed.config.vocab_size, (2, 5), generator=g).to(TRITON_DEVICE)
    linear, _ = grouped_fp8(128, groups=2, inputs=64)
    linear = linear.to(TRITON_DEVICE)
    xg = torch.randn(3, 2, 64, generator=g).to(TRITON_DEVICE)
    with torch.no_grad():
        want, want_g = moe(x, ids), linear.grouped(xg)
        with kernels.use_backend("triton"):
            got, got_g = moe(x, ids), linear.grouped(xg)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_g, want_g, rtol=1e-4, atol=1e-5)


def test_dtype_casts_are_refused_and_moves_keep_the_expert_view(packed):
    block = packed.layers[1]
    with pytest.raises(TypeError, match="load_model\\(dtype=...\\)"):
        block.ffn.half()
    with pytest.raises(TypeError, match="keep_quantized=False"):
        block.attn.wq_a.to(torch.bfloat16)
    assert block.attn.wq_a.weight.dtype == torch.float8_e4m3fn  # refused before touching it
    experts = block.ffn.experts
    experts.to("cpu")
    assert experts.weights.w1 is experts.w1 and experts.weights.w3_scale is experts.w3_scale


# ---- other checkpoints through the packed loader ---------------------------------------------
def rewrite(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_float_scales_are_read_as_e8m0(tmp_path):
    model = random_model(tiny_config("tiny"))
    directory = save_checkpoint(model, tmp_path, quantize="fp8+fp4")
    want = load_model(directory, keep_quantized=True)

    def to_float(tensors):
        for name in [n for n in tensors if n.endswith(".scale")]:
            tensors[name] = tensors[name].float()

    rewrite(directory, to_float)
    got = load_model(directory, keep_quantized=True)
    assert got.layers[0].attn.wq_a.scale.dtype == torch.float8_e8m0fnu
    assert got.layers[0].ffn.experts.w1_scale.dtype == torch.float8_e8m0fnu
    ids = tokens(512, (1, 12))
    with torch.no_grad():
        assert torch.equal(got(ids), want(ids))

    def not_power_of_two(tensors):
        tensors["layers.2.attn.wkv.scale"] = tensors["layers.2.attn.wkv.scale"] * 1.5

    rewrite(directory, not_power_of_two)
    with pytest.raises(CheckpointError, match=r"layers\.2\.attn\.wkv\.scale.*keep_quantized=False"):
        load_model(directory, keep_quantized=True)


def test_mixed_expert_formats_in_a_layer_are_refused(tmp_path):
    model = random_model(tiny_config("tiny"))
    directory = save_checkpoint(model, tmp_path, quantize="fp8+fp4")
    name = "layers.3.ffn.experts.5.w2"

    def one_fp8_expert(tensors):
        q = QuantizedWeight.quantize(model.state_dict()[name + ".weight"], "fp8")
        tensors[name + ".weight"], tensors[name + ".scale"] = q.weight, q.scale

    rewrite(directory, one_fp8_expert)
    with pytest.raises(CheckpointError, match=r"layer 3 .*mixed formats \['fp4', 'fp8'\]"):
        load_model(directory, keep_quantized=True)
    load_model(directory, keep_quantized=False)  # the dequantizing loader takes it


def test_dense_checkpoints_and_the_cpu_default_load_dense(tmp_path, checkpoint):
    on_cpu = load_model(checkpoint)  # keep_quantized=None: dequantized off CUDA
    assert isinstance(on_cpu.layers[0].attn.wq_a, nn.Linear)
    assert isinstance(on_cpu.layers[0].ffn.experts, nn.ModuleList)
    model = random_model(tiny_config("tiny-hca"))
    directory = save_checkpoint(model, tmp_path, layout="hf")
    kept = load_model(directory, keep_quantized=True)
    assert not any(isinstance(m, (FP8Linear, PackedExperts)) for m in kept.modules())
    ids = tokens(model.config.vocab_size, (1, 20))
    with torch.no_grad():
        assert_logits_close(kept(ids), model(ids))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_load_keeps_weights_packed_by_default(checkpoint, dense):
    model = load_model(checkpoint, device="cuda")
    assert isinstance(model.layers[0].attn.wq_a, FP8Linear)
    assert model.layers[0].ffn.experts.w1.is_cuda
    ids = tokens(model.config.vocab_size, (2, 40))
    with torch.no_grad():
        got = model(ids.cuda()).cpu()
        want = dense(ids)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * want.abs().max().item())
