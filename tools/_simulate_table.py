"""The table ``nagashi simulate`` prints without ``--json`` (from the simulation JSON)."""

from __future__ import annotations

from typing import Any

__all__ = ["print_table"]


def print_table(doc: dict[str, Any]) -> None:
    """The setting, one row per policy, the paired differences, the adoption levels and the
    files written."""
    _print_setting(doc)
    _print_policies(doc)
    if "plot" in doc:
        print(f"plot: {doc['plot']}")
    if "adoption_plot" in doc:
        print(f"adoption plot: {doc['adoption_plot']}")
    if "revenue_plot" in doc:
        print(f"revenue plot: {doc['revenue_plot']}")


def _print_setting(doc: dict[str, Any]) -> None:
    """The passengers, the fleet and (``--taxis auto``) its sizing."""
    cal = doc["calibration"]
    pas = doc["passengers"]
    fleet = doc["fleet"]
    if pas["days"]:
        print(
            f"passengers: {pas['records']} recorded on {', '.join(pas['days'])} (held out: "
            f"{'no' if pas['in_sample'] else 'yes'}); demand from {_days_text(doc)}"
        )
    else:
        print(
            f"passengers: synthetic (in-sample); arrivals x{cal['multiplier']} of the observed "
            f"rate share; served {cal['served_trips_per_h']}/h vs target "
            f"{cal['target_trips_per_h']}/h"
        )
    occ = fleet["occupied_share_reference"]
    print(
        f"fleet: {fleet['taxis']} cabs ({fleet['sized']}), {fleet['test_taxis']} on the policy "
        f"under test; reference fleet occupied "
        f"{'n/a' if occ is None else f'{100 * occ:.1f}%'} of its time; "
        f"matching {doc['config']['matching']}"
    )
    sizing = fleet.get("sizing")
    if sizing is not None:
        tried = ", ".join(
            f"{t['taxis']}: {100 * t['occupied_share']:.1f}%" for t in sizing["tried"]
        )
        lo, hi = (100 * x for x in sizing["band"])
        print(
            f"taxis auto: tried {tried}; "
            + (
                f"{sizing['taxis']} cabs are in the {lo:.0f}-{hi:.0f}% band"
                if sizing["in_band"]
                else f"NO fleet size reaches the {lo:.0f}-{hi:.0f}% band; running the closest, "
                f"{sizing['taxis']} cabs"
            )
        )


def _print_policies(doc: dict[str, Any]) -> None:
    """Per policy its measures; the paired differences; per adoption level the adopters' and
    the whole fleet's revenue."""
    head = ("policy", "revenue/h", "95% CI", "pickups/h", "occ.time", "search s", "wait s")
    print(
        f"{head[0]:<19}{head[1]:>10}  {head[2]:<17}{head[3]:>10}{head[4]:>9}{head[5]:>9}"
        f"{head[6]:>8}  expired"
    )
    for name, row in doc["policies"].items():
        r = row["revenue_per_h"]
        ci = f"[{_f(r['ci95'][0])}, {_f(r['ci95'][1])}]"
        print(
            f"{name:<19}{_f(r['mean']):>10}  {ci:<17}{_f(row['pickups_per_h']['mean']):>10}"
            f"{_f(row['occupied_time_share']['mean'], 3):>9}"
            f"{_f(row['search_time_s']['mean'], 0):>9}"
            f"{_f(row['wait_time_s']['mean'], 0):>8}  {_f(row['expired_share']['mean'], 3)}"
        )
    for name, pg in doc.get("paired", {}).items():
        d = pg["revenue_per_h_diff"]
        gain = pg["relative_gain"]
        print(
            f"{name} - {doc['reference']} (paired): {_f(d['mean'])}/h "
            f"[{_f(d['ci95'][0])}, {_f(d['ci95'][1])}]"
            + (f", {100 * gain:+.1f}%" if gain is not None else "")
        )
    _print_model(doc)
    for name, points in doc.get("adoption", {}).items():
        for pt in points:
            a, f = pt["adopters_revenue_per_h"], pt["fleet_revenue_per_h"]
            d = pt["paired"]["revenue_per_h_diff"]
            fd = pt["fleet_paired"]["revenue_per_h_diff"]
            print(
                f"adoption {pt['adoption']:g} ({pt['test_taxis']} cabs on {name}): adopters "
                f"{_f(a['mean'])}/h ({_f(d['mean'])} [{_f(d['ci95'][0])}, {_f(d['ci95'][1])}] "
                f"vs hotspot), whole fleet {_f(f['mean'])}/h ({_f(fd['mean'])} "
                f"[{_f(fd['ci95'][0])}, {_f(fd['ci95'][1])}])"
            )


def _print_model(doc: dict[str, Any]) -> None:
    """With ``--model``: the model, each +model policy against its statistics twin, and how
    often its read-outs had recent inputs."""
    m = doc.get("model")
    if m is None:
        return
    days = m["train_days"]
    print(f"model {m['version']} trained on {days[0]}..{days[-1]} ({m['train_dates']} dates)")
    for name, pg in doc.get("model_vs_statistics", {}).items():
        d = pg["revenue_per_h_diff"]
        gain = pg["relative_gain"]
        print(
            f"{name} - {name.removesuffix('+model')} (paired): {_f(d['mean'])}/h "
            f"[{_f(d['ci95'][0])}, {_f(d['ci95'][1])}]"
            + (f", {100 * gain:+.1f}%" if gain is not None else "")
        )
    for name, rec in doc.get("model_recent", {}).items():
        by = ", ".join(f"{k} {v}" for k, v in rec["readouts_by_recent"].items())
        print(f"{name} read-outs: {rec['readouts']} ({by})")


def _days_text(doc: dict[str, Any]) -> str:
    days = doc.get("demand_days") or {}
    ranges = days.get("filter") or days.get("ranges")
    if ranges:
        return ",".join(a if a == b else f"{a}..{b}" for a, b in ranges)
    return f"{days.get('first')}..{days.get('last')}" if days else "unknown days"


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
