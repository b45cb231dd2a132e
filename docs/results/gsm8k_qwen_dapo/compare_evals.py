"""Paired comparison of two greedy GSM8K evals (strict accuracy) by gsm8k_test_index."""
import json, math, sys, glob

def load(run):
    files = sorted(glob.glob(f"/work/eval700/{run}/dumped_evals/*.jsonl"))
    rows = [json.loads(l) for f in files for l in open(f)]
    return {r["gsm8k_test_index"]: r for r in rows}

def binom_two_sided(b, c):
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    p = sum(math.comb(n, i) for i in range(0, k + 1)) / 2 ** n
    return min(1.0, 2 * p)

d, g = load("dapo"), load("grpo")
# GRPO's rows 0-199: the run's own final eval (same greedy settings); only 200-699 were rerun.
for l in open("/work/main/docs/results/gsm8k_qwen_dapo/grpo_eval_after.jsonl"):
    r = json.loads(l)
    g.setdefault(r["gsm8k_test_index"], r)
prev = {"dapo": "docs/results/gsm8k_qwen_dapo/eval_after.jsonl", "grpo": "docs/results/gsm8k_qwen_dapo/grpo_eval_after.jsonl"}
for name, cur in [("dapo", d), ("grpo", g)]:
    old = {json.loads(l)["gsm8k_test_index"]: json.loads(l) for l in open("/work/main/" + prev[name])}
    if name == "grpo":
        continue
    same = sum(cur[i]["response"] == old[i]["response"] for i in old if i in cur)
    print(f"{name}: rows 0-199 responses identical to the run's own eval: {same}/{len(old)}")
for lo, hi in [(0, 200), (200, 700), (0, 700)]:
    idx = [i for i in d if lo <= i < hi and i in g]
    sd = [d[i]["strict_accuracy"] for i in idx]
    sg = [g[i]["strict_accuracy"] for i in idx]
    n = len(idx)
    acc = lambda s: (sum(s) / n, math.sqrt(sum(s) / n * (1 - sum(s) / n) / n))
    b = sum(1 for x, y in zip(sd, sg) if x == 1 and y == 0)
    c = sum(1 for x, y in zip(sd, sg) if x == 0 and y == 1)
    (ad, ed), (ag, eg) = acc(sd), acc(sg)
    print(f"rows {lo}-{hi-1} (n={n}): DAPO {ad:.3f} ± {ed:.3f}, GRPO {ag:.3f} ± {eg:.3f}; "
          f"DAPO-only right {b}, GRPO-only right {c}, exact McNemar p = {binom_two_sided(b, c):.4f}")
