"""Writes crates/rlvr-algo/tests/golden/worker_losses_head.json from SkyRL's own functions.

The functions are taken verbatim from a SkyRL checkout at HEAD (a9564572): `ppo_critic_loss` and
`compute_approx_kl` from skyrl/backends/skyrl_train/utils/ppo_utils.py, `masked_mean` from
skyrl/backends/skyrl_train/utils/torch_utils.py (extracted with `ast` and executed, so Ray and
the rest of SkyRL need not be installed). `kl_entropy_terms` cases compose them as the policy
worker's `_forward_backward_micro` does (workers/worker.py, the RL path: KL as the mean over rows
of each row's masked token mean, entropy as the masked token mean, both weighted by the
micro-batch's share of rows and summed over the micro-batches of a mini-batch).

    python scripts/golden/worker_losses.py --skyrl PATH_TO_SKYRL_CHECKOUT
Needs torch (2.13 was used) and numpy.
"""

import argparse
import ast
import hashlib
import json
import math
import pathlib
import subprocess
import types
from typing import Optional, Tuple

import torch

PPO = "skyrl/backends/skyrl_train/utils/ppo_utils.py"
TORCH_UTILS = "skyrl/backends/skyrl_train/utils/torch_utils.py"
WORKER = "skyrl/backends/skyrl_train/workers/worker.py"


def extract(root, path, names, namespace):
    src = (root / path).read_text()
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            node.decorator_list = []
            code = compile(ast.Module(body=[node], type_ignores=[]), path, "exec")
            exec(code, namespace)
    missing = [n for n in names if n not in namespace]
    assert not missing, f"{path}: {missing} not found"
    return hashlib.sha1(f"blob {len(src.encode())}\0".encode() + src.encode()).hexdigest()


def num(x):
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def nested(t):
    if t.dim() == 0:
        return num(t.item())
    return [nested(r) for r in t]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyrl", required=True, type=pathlib.Path)
    ap.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parents[2]
        / "crates/rlvr-algo/tests/golden/worker_losses_head.json",
    )
    args = ap.parse_args()
    ns = {"torch": torch, "Optional": Optional, "Tuple": Tuple, "AlgorithmConfig": object}
    blobs = {
        TORCH_UTILS: extract(args.skyrl, TORCH_UTILS, ["masked_mean"], ns),
        PPO: extract(args.skyrl, PPO, ["ppo_critic_loss", "compute_approx_kl"], ns),
    }
    try:
        commit = subprocess.check_output(
            ["git", "-C", str(args.skyrl), "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except Exception:
        commit = "a9564572eb8e91076be43c1bd5e4615e3de17265"
    masked_mean = ns["masked_mean"]
    critic_loss = ns["ppo_critic_loss"]
    approx_kl = ns["compute_approx_kl"]
    gen = torch.Generator().manual_seed(20261206)

    def randn(*shape, scale=1.0, dtype=torch.float64):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    def mask_of(b, r, kind):
        if kind == "none":
            return None
        m = torch.ones(b, r, dtype=torch.float64)
        if kind in ("ragged", "empty_row"):
            for i in range(b):
                m[i, r - (i % r) :] = 0.0
        if kind == "empty_row":
            m[1] = 0.0
        if kind == "fractional":
            m = (torch.rand(b, r, generator=gen, dtype=torch.float64) > 0.3).double() * 0.5
        return m

    critic_cases = []
    for dtype in (torch.float32, torch.float64):
        dname = str(dtype).split(".")[-1]
        for (b, r) in ((2, 3), (4, 5), (3, 7)):
            for mask_kind in ("none", "full", "ragged", "empty_row", "fractional"):
                if mask_kind == "empty_row" and b < 2:
                    continue
                for clip in (None, 0.2, 0.5, 0.0):
                    old = randn(b, r, scale=0.5, dtype=dtype)
                    values = (old + randn(b, r, scale=0.4, dtype=dtype)).requires_grad_(True)
                    returns = randn(b, r, dtype=dtype)
                    mask = mask_of(b, r, mask_kind)
                    mask = None if mask is None else mask.to(dtype)
                    cfg = types.SimpleNamespace(value_clip=clip)
                    loss, clipfrac = critic_loss(values, old, returns, cfg, loss_mask=mask)
                    (grad,) = torch.autograd.grad(loss, values)
                    critic_cases.append(
                        {
                            "name": f"critic_{dname}_{b}x{r}_mask_{mask_kind}_clip_{clip}",
                            "dtype": dname,
                            "inputs": {
                                "values": nested(values.detach()),
                                "old_values": nested(old),
                                "returns": nested(returns),
                                "loss_mask": None if mask is None else nested(mask),
                            },
                            "call": {"value_clip": clip},
                            "expected": {
                                "loss": num(loss.item()),
                                "clipfrac": None if clipfrac is None else num(clipfrac),
                                "grad_values": nested(grad),
                            },
                        }
                    )

    aux_cases = []
    for dtype in (torch.float32, torch.float64):
        dname = str(dtype).split(".")[-1]
        for est in ("k1", "k2", "k3", "abs"):
            for (rows, r, micro) in ((4, 5, 2), (6, 4, 4), (3, 6, 1), (5, 3, 5)):
                for use_kl, use_ent in ((True, True), (True, False), (False, True)):
                    for mask_kind in ("ragged", "empty_row", "full"):
                        lp = (-randn(rows, r, dtype=dtype).abs()).requires_grad_(True)
                        base = -randn(rows, r, dtype=dtype).abs()
                        ent = randn(rows, r, dtype=dtype).abs().requires_grad_(True)
                        mask = mask_of(rows, r, mask_kind).to(dtype)
                        kl_coef, ent_coef = 0.05, 0.01
                        total = torch.zeros((), dtype=dtype)
                        kls, ents = [], []
                        for s in range(0, rows, micro):
                            e = min(s + micro, rows)
                            m = mask[s:e]
                            weight = (e - s) / rows  # len(microbatch) / len(data)
                            entropy = masked_mean(ent[s:e], m)
                            ent_term = entropy * ent_coef if use_ent else torch.tensor(0.0)
                            if use_kl:
                                kl = approx_kl(lp[s:e], base[s:e], loss_mask=m, kl_estimator_type=est)
                                kl = masked_mean(kl, m, dim=-1).mean()
                                kls.append(kl.item())
                            else:
                                kl = torch.tensor(0.0)
                            total = total + (kl * kl_coef - ent_term) * weight
                            ents.append(entropy.item())
                        g_lp, g_ent = torch.autograd.grad(total, (lp, ent), allow_unused=True)
                        zeros = torch.zeros(rows, r, dtype=dtype)
                        aux_cases.append(
                            {
                                "name": f"aux_{dname}_{est}_{rows}x{r}_micro{micro}_kl{int(use_kl)}_ent{int(use_ent)}_{mask_kind}",
                                "dtype": dname,
                                "inputs": {
                                    "log_probs": nested(lp.detach()),
                                    "base_log_probs": nested(base),
                                    "entropy": nested(ent.detach()),
                                    "loss_mask": nested(mask),
                                },
                                "call": {
                                    "kl_estimator_type": est,
                                    "micro_batch_size": micro,
                                    "use_kl_loss": use_kl,
                                    "kl_loss_coef": kl_coef,
                                    "use_entropy_loss": use_ent,
                                    "entropy_loss_coef": ent_coef,
                                },
                                "expected": {
                                    "loss": num(total.item()),
                                    "policy_kl": num(sum(kls) / len(kls)) if kls else None,
                                    "policy_entropy": num(sum(ents) / len(ents)),
                                    "grad_log_probs": nested(g_lp if g_lp is not None else zeros),
                                    "grad_entropy": nested(g_ent if g_ent is not None else zeros),
                                },
                            }
                        )

    out = {
        "generator": "scripts/golden/worker_losses.py: SkyRL's functions extracted verbatim and called",
        "torch_version": torch.__version__,
        "head_commit": commit,
        "description": (
            "critic_loss: ppo_critic_loss(values, old_values, returns, config(value_clip), loss_mask) -> "
            "(loss, clipfrac) and d loss / d values. kl_entropy_terms: the policy worker's KL and "
            "entropy terms over the micro-batches of one mini-batch (micro_batch_size rows each): "
            "sum over micro-batches of (kl_loss_coef * mean_rows(masked_mean(kl, mask, dim=-1)) - "
            "entropy_loss_coef * masked_mean(entropy, mask)) * rows/mini-batch rows; policy_kl and "
            "policy_entropy are the means over micro-batches as the worker's reduce_metrics gives them; "
            "gradients of that sum w.r.t. log_probs and entropy (zeros where a term is off)."
        ),
        "reference": {
            "repo": "NovaSky-AI/SkyRL",
            "commit": commit,
            "functions": {
                "masked_mean": {"path": TORCH_UTILS, "blob": blobs[TORCH_UTILS]},
                "ppo_critic_loss": {"path": PPO, "blob": blobs[PPO]},
                "compute_approx_kl": {"path": PPO, "blob": blobs[PPO]},
                "composition": {"path": WORKER, "function": "PolicyWorkerBase._forward_backward_micro"},
            },
        },
        "critic_loss": critic_cases,
        "kl_entropy_terms": aux_cases,
    }
    args.out.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"{args.out}: {len(critic_cases)} critic_loss, {len(aux_cases)} kl_entropy_terms cases")


if __name__ == "__main__":
    main()
