"""DataFrames of candidates, families and official networks, with their complexity."""

from __future__ import annotations

import pandas as pd

from .complexity import CountCache, count_many
from .compound import Candidate, Member, multipliers
from .spec import NetworkSpec, spec_for


def _structure(spec) -> dict:
    """Resolution, blocks per stage and channels (stem, stages, head) of any base's spec; a
    user's network, whose structure is its function's, has none ("")."""
    from .bases import structure

    shape = structure(spec)
    return {
        "resolution": spec.resolution,
        "repeats": shape.repeats_text if shape else "",
        "channels": shape.widths_text if shape else "",
    }


def candidates_frame(cands: list[Candidate], base: NetworkSpec | None = None,
                     cache: CountCache | None = None, target: float = 2.0) -> pd.DataFrame:
    """One row per distinct network: its triples, d/w/r, rounded structure and complexity.

    ``flops_ratio`` is realized FLOPs over the base's; ``budget_ratio`` the budget
    ``target ** phi`` (2^phi) the candidates are held to, and ``ratio_error`` how far the
    realized ratio is from it, as a fraction; ``nominal_ratio`` is the representative
    triple's own (alpha * beta^2 * gamma^2)^phi. ``d``, ``w``, ``r`` are alpha^phi, beta^phi,
    gamma^phi; ``resolution`` is the network's image size and ``nominal_resolution`` what
    gamma^phi rounds to: they differ where the candidate was held to its budget.
    """
    base = base or spec_for("efficientnet-b0")
    counts = count_many([base] + [c.spec for c in cands], cache)
    base_c, rest = counts[0], counts[1:]
    rows = []
    for c, n in zip(cands, rest):
        t = c.triple
        d, w, r = multipliers(t, c.phi)
        budget = target**c.phi
        rows.append({
            "alpha": t.alpha, "beta": t.beta, "gamma": t.gamma, "product": round(t.product, 4),
            "triples": c.label, "n_triples": len(c.triples), "phi": c.phi,
            "d": round(d, 4), "w": round(w, 4), "r": round(r, 4),
            **_structure(c.spec),
            "nominal_resolution": c.nominal_resolution or c.spec.resolution,
            "params": n.params, "flops": n.flops, "activations": n.activations,
            "flops_ratio": round(n.flops / base_c.flops, 4),
            "budget_ratio": budget,
            "ratio_error": round(n.flops / base_c.flops / budget - 1.0, 4),
            "nominal_ratio": round(t.product**c.phi, 4),
            "network": c.spec.architecture_key(),
        })
    return pd.DataFrame(rows)


def family_frame(members: list[Member], base: NetworkSpec | None = None,
                 cache: CountCache | None = None) -> pd.DataFrame:
    """One row per family member: phi, d/w/r, structure, complexity, FLOPs over the base's."""
    base = base or spec_for("efficientnet-b0")
    counts = count_many([base] + [m.spec for m in members], cache)
    base_flops, counts = counts[0].flops, counts[1:]
    rows = []
    for m, n in zip(members, counts):
        d, w, r = m.multipliers
        rows.append({
            "series": f"compound {m.triple}", "name": f"phi={m.phi:g}", "phi": m.phi,
            "d": round(d, 4), "w": round(w, 4), "r": round(r, 4),
            **_structure(m.spec),
            "params": n.params, "flops": n.flops, "activations": n.activations,
            "flops_ratio": round(n.flops / base_flops, 4), "nominal_ratio": round(m.triple.product**m.phi, 4),
        })
    return pd.DataFrame(rows)


def official_frame(specs: list[NetworkSpec], cache: CountCache | None = None) -> pd.DataFrame:
    """The official networks with their coefficients and complexity."""
    counts = count_many(specs, cache)
    base_flops = count_many([spec_for("efficientnet-b0")], cache)[0].flops
    rows = []
    for s, n in zip(specs, counts):
        rows.append({
            "series": "official", "name": s.name, "phi": None,
            "d": s.depth, "w": s.width, "r": round(s.resolution / 224, 4),
            **_structure(s),
            "params": n.params, "flops": n.flops, "activations": n.activations,
            "flops_ratio": round(n.flops / base_flops, 4), "nominal_ratio": None,
        })
    return pd.DataFrame(rows)
