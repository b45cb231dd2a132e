"""Writes crates/rlvr-algo/tests/golden/off_policy_ref.json: REF's `ppo_policy_loss` (regular and
dual_clip) with off-policy correction (token/sequence TIS, geometric/product sequence masks,
outlier-token masks) over every loss reduction, on float64 and float32 inputs, some with
fractional or all-zero mask rows. Same schema as policy_losses.json.

The functions are extracted verbatim (with `ast`) from a SkyRL checkout at REF (27380cb7):
skyrl-train/skyrl_train/utils/{ppo_utils,off_policy_correction_utils,torch_utils}.py.

    python scripts/golden/off_policy.py --skyrl PATH_TO_SKYRL_CHECKOUT_AT_REF
Needs torch (2.13 was used).
"""

import argparse
import ast
import json
import pathlib
import types
import typing

import torch

UTILS = "skyrl-train/skyrl_train/utils"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skyrl", required=True, type=pathlib.Path)
    ap.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parents[2]
        / "crates/rlvr-algo/tests/golden/off_policy_ref.json",
    )
    args = ap.parse_args()
    ns = {"torch": torch, "AlgorithmConfig": object, "DictConfig": object, "Float": None}
    ns.update({k: getattr(typing, k) for k in ("Optional", "Tuple", "List", "Union", "Literal")})
    wanted = {
        "torch_utils.py": ["masked_mean", "safe_exp_delta"],
        "off_policy_correction_utils.py": [
            "compute_tis_ratio",
            "compute_outlier_token_mask",
            "compute_sequence_mask",
            "compute_off_policy_correction",
            "apply_off_policy_correction",
        ],
        "ppo_utils.py": ["ppo_policy_loss", "reduce_loss"],
    }
    for file, names in wanted.items():
        path = args.skyrl / UTILS / file
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name in names:
                node.decorator_list = []
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), ns)
        missing = [n for n in names if n not in ns]
        assert not missing, f"{path}: {missing} not found"

    g = torch.Generator().manual_seed(5)
    cases = []
    for dtype in (torch.float64, torch.float32):
        dname = str(dtype).split(".")[-1]
        for k in range(60):
            b, r = 4, 9
            rand = lambda: torch.rand(b, r, generator=g, dtype=torch.float64)
            randn = lambda: torch.randn(b, r, generator=g, dtype=torch.float64)
            lp = (-rand() * 3).to(dtype)
            old = (lp.double() + randn() * [0.05, 0.5, 0.002][k % 3]).to(dtype)
            roll = (old.double() + randn() * [0.02, 0.011, 0.3, 0.005][k % 4]).to(dtype)
            adv = randn().to(dtype)
            mask = torch.ones(b, r, dtype=dtype)
            for i in range(b):
                mask[i, r - 1 - 2 * i :] = 0
            if k % 5 == 1:
                mask = mask * rand().to(dtype)
            if k % 5 == 2:
                mask[2] = 0
            opc = {
                "tis_ratio_type": [None, "token", "sequence"][(k // 7) % 3],
                "token_tis_ratio_clip_high": 2.0,
                "sequence_tis_ratio_clip_high": 5.0,
                "sequence_mask_metric": ["geometric", "product", "geometric"][(k // 3) % 3],
                "geo_mask_high": 1.01,
                "geo_mask_low": 0.99,
                "product_mask_high": 2.0,
                "product_mask_low": 0.5,
                "outlier_token_is_threshold_low": [None, 0.1][(k // 2) % 2],
                "outlier_token_is_threshold_high": [None, 5.0][k % 2],
            }
            loss_type = ["regular", "dual_clip"][k % 2]
            reduction = ["token_mean", "sequence_mean", "seq_mean_token_sum_norm"][k % 3]
            config = {
                "policy_loss_type": loss_type,
                "loss_reduction": reduction,
                "eps_clip_low": 0.2,
                "eps_clip_high": 0.28,
                "clip_ratio_c": 3.0,
                "max_seq_len": 16,
                "off_policy_correction": opc,
            }
            cfg = types.SimpleNamespace(**config)
            cfg.off_policy_correction = types.SimpleNamespace(**opc)
            x = lp.clone().requires_grad_(True)
            loss, metrics = ns["ppo_policy_loss"](x, old, adv, cfg, loss_mask=mask, rollout_logprobs=roll)
            (grad,) = torch.autograd.grad(loss, x)
            cases.append(
                {
                    "name": f"{loss_type}_{reduction}_tis_{opc['tis_ratio_type']}_{opc['sequence_mask_metric']}_{k}_{dname}",
                    "dtype": dname,
                    "policy_loss_type": loss_type,
                    "function": "ppo_policy_loss",
                    "config": config,
                    "inputs": {
                        "log_probs": lp.tolist(),
                        "old_log_probs": old.tolist(),
                        "advantages": adv.tolist(),
                        "loss_mask": mask.tolist(),
                        "rollout_logprobs": roll.tolist(),
                    },
                    "expected": {
                        "loss": loss.item(),
                        "metrics": {m: float(v) for m, v in metrics.items()},
                        "grad_log_probs": grad.tolist(),
                    },
                }
            )
    out = {
        "generator": "scripts/golden/off_policy.py: SkyRL REF's functions extracted verbatim and called",
        "torch_version": torch.__version__,
        "ref_commit": "27380cb7c2a509238d4e0e780723059cfbe917ab",
        "description": "ppo_policy_loss with off-policy correction; schema of policy_losses.json",
        "cases": cases,
    }
    args.out.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{args.out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
