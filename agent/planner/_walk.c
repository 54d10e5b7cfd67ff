/* The route read-out's walk in C: agent/planner/readout.py's follow() on its main path (no
 * spread, a bounded number of visits per link: the shape safety/ shows), statement for
 * statement, so the same links, length and duration, bit for bit:
 *   - the terms of Q per link and layer as readout_terms._link_terms computes them
 *     (_interp_at: floor, the clamp to one layer, the truncation to a row, the clamp of the
 *     lower row),
 *   - the pickup probability as readout._Walk.scores computes it (the last pass: the cab's
 *     known one, the table's, the route's own; the depleted probability through numpy's own
 *     expm1 loop, whose address is passed in: numpy's expm1 is not the C library's),
 *   - the choice at a junction as follow() makes it (no U-turn, no link held max_visits
 *     times, from a link that is no dead end none that is, one not on the route yet while
 *     there is one, the first of the highest Q).
 * Built with -ffp-contract=off (setup.py): no fused multiply-add, which Python does not use.
 *
 * The allowed mask of each minute the walk reaches is given as a pointer per minute; where it
 * is missing the walk stops with NAGASHI_WALK_NEED_MINUTE and the minute, its state intact,
 * and goes on when called again with it (agent/planner/walk_c.py fills it in). Loaded with
 * ctypes; no Python API is used (the module initialiser only lets the build tools treat it as
 * an extension; -DNAGASHI_NO_PYTHON leaves it out, for tests/agent/walk_driver.c, which runs
 * the walk as a program: on aarch64 under qemu, tests/agent/test_kernel_c_aarch64.py). */
#ifndef NAGASHI_NO_PYTHON
#include <Python.h>
#endif
#include <stdint.h>
#include <math.h>
#include <stddef.h> /* NULL without Python.h (-DNAGASHI_NO_PYTHON) */

typedef void (*loop_fn)(char **args, const intptr_t *dims, const intptr_t *steps, void *data);

/* walk_c._Walk, field for field */
typedef struct {
    int64_t n, values_rows, cont_rows, cont_width, n_layers, max_edges, max_visits;
    int64_t mask_lo, mask_count;
    const int64_t *fwd_off, *fwd_dst, *arc_off, *arc_dst, *cell, *layer_slot;
    const double *length_m, *tau_s, *values, *cont, *fare, *cost, *trip_layers;
    const double *slope_v, *slope_c;
    const double *prob, *window_s, *rate_h, *pass_age, *last_pass; /* the last two: or NULL */
    const uint8_t *live;
    const uint8_t *const *masks; /* per minute mask_lo + i: the allowed mask, or NULL */
    double minute0, step_s, t0, min_length_m, min_duration_s, horizon_s;
    loop_fn expm1;
    void *expm1_data;
    /* the state: the route (the prefix first, n_prefix links), its length and time, the link
     * it is at; per link the time of the route's last pass (-inf: none) and its visits */
    int64_t *route;
    int64_t start, n_prefix, n_route, e, started, need_minute;
    double length, t;
    double *own_t;
    int32_t *visits;
    double *trace; /* or NULL: per link of the route past the prefix, its Q when chosen */
    /* one cab's view of the fleet (agent.planner.fleet.CabOverlay) over prob, window_s and
     * pass_age: W and P per slot of the links claim_links (sorted, n_claims of them; P as
     * claim_p[slot * n_claims + i]), and where seen is not NULL the pass age
     * min(pass_age, s - seen_off), s = seen_age where seen[g], else inf, but pass_seen on the
     * links pass_links (sorted, n_passes) */
    const int64_t *claim_links, *pass_links;
    const double *claim_w, *claim_p, *pass_seen;
    const uint8_t *seen;
    int64_t n_claims, n_passes;
    double seen_age, seen_off;
} Walk;

#define WALK_DONE 0
#define WALK_NEED_MINUTE 1
#define WALK_FALLBACK (-1)
#define ENTERABLE 2

static double np_expm1(const Walk *w, double x) {
    double y;
    char *args[2] = {(char *)&x, (char *)&y};
    intptr_t dims[1] = {1}, steps[2] = {sizeof(double), sizeof(double)};
    w->expm1(args, dims, steps, w->expm1_data);
    return y;
}

/* the position of g in the sorted links[0:count], or -1 */
static int64_t find(const int64_t *links, int64_t count, int64_t g) {
    int64_t lo = 0, hi = count;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (links[mid] < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < count && links[lo] == g ? lo : -1;
}

/* the view's P of link g in slot, its W */
static double prob_of(const Walk *w, int64_t slot, int64_t g) {
    if (w->n_claims > 0) {
        const int64_t i = find(w->claim_links, w->n_claims, g);
        if (i >= 0) return w->claim_p[slot * w->n_claims + i];
    }
    return w->prob[slot * w->n + g];
}

static double window_of(const Walk *w, int64_t g) {
    if (w->n_claims > 0) {
        const int64_t i = find(w->claim_links, w->n_claims, g);
        if (i >= 0) return w->claim_w[i];
    }
    return w->window_s[g];
}

/* the view's pass age of link g, negated (-inf: none): the table's, or the cab's view's
 * (np.minimum(pass_age, seen - seen_off): the lower, a NaN wins) */
static double neg_pass_age(const Walk *w, int64_t g) {
    if (w->seen == NULL) return w->pass_age != NULL ? -w->pass_age[g] : -INFINITY;
    const int64_t i = w->n_passes > 0 ? find(w->pass_links, w->n_passes, g) : -1;
    double a = (i >= 0 ? w->pass_seen[i] : (w->seen[g] ? w->seen_age : INFINITY)) - w->seen_off;
    if (w->pass_age != NULL) {
        const double b = w->pass_age[g];
        if (isnan(b) || (!isnan(a) && b <= a)) a = b;
    }
    return -a;
}

/* readout_terms._interp_at */
static double interp_at(const double *t2d, int64_t rows, int64_t width, int64_t k, double x,
                        int64_t col, double slope) {
    double a = floor(x);
    if (1.0 > a) a = 1.0; /* max(floor(x), 1.0): the first unless the second is greater */
    double w = x - a;
    int64_t lo = (int64_t)((double)k + a);
    if (rows - 2 < lo) lo = rows - 2;
    double v0 = t2d[lo * width + col];
    if (w >= 0.0) return v0 + w * (t2d[(lo + 1) * width + col] - v0);
    return v0 + -w * slope;
}

/* the allowed mask of the minute the cab is in at t (the walk's own time; Python reads the same
 * floor), or NULL with need_minute set where it was not handed over yet */
static const uint8_t *mask_at(Walk *w, double t) {
    const double raw = floor(w->minute0 + t / 60.0);
    const double at = raw - (double)w->mask_lo;
    if (!(at >= 0.0 && at < (double)w->mask_count) || w->masks[(int64_t)at] == NULL) {
        w->need_minute = (int64_t)raw;
        return NULL;
    }
    return w->masks[(int64_t)at];
}

/* the per-link state back to none (the caller's arrays are reused by the next walk) */
static void reset(Walk *w) {
    w->own_t[w->start] = -INFINITY;
    w->visits[w->start] = 0;
    for (int64_t i = 0; i < w->n_route; i++) {
        w->own_t[w->route[i]] = -INFINITY;
        w->visits[w->route[i]] = 0;
    }
}

/* follow(): returns WALK_DONE (the route in route[0:n_route], length, t), WALK_NEED_MINUTE
 * (need_minute: the minute whose mask is missing; call again with it) or WALK_FALLBACK (a
 * non-finite time or shift, where Python's arithmetic is the reference: nothing kept) */
int nagashi_walk(Walk *w) {
    const int64_t n = w->n;
    if (!w->started) {
        const int64_t start = w->start;
        if (!isfinite(w->t0)) return WALK_FALLBACK;
        w->own_t[start] = w->t0;
        w->visits[start] = 1;
        w->length = 0.0;
        w->t = w->t0;
        w->e = start;
        for (int64_t i = 0; i < w->n_prefix; i++) {
            int64_t f = w->route[i];
            w->length += w->length_m[f];
            w->t += w->tau_s[f];
            w->own_t[f] = w->t;
            w->visits[f] += 1;
            w->e = f;
        }
        w->n_route = w->n_prefix;
        w->started = 1;
    }
    const int64_t top = w->n_layers - 1;
    while (w->n_route < w->max_edges && w->t < w->horizon_s) {
        const double t = w->t;
        if (w->length >= w->min_length_m && t - w->t0 >= w->min_duration_s) break;
        const int64_t e = w->e;
        const int from_live = w->live[e] != 0;
        int64_t best_f = -1, new_f = -1;
        double best_q = -INFINITY, new_q = -INFINITY;
        const uint8_t *mask = NULL;
        int64_t k = 0, slot = 0;
        for (int64_t j = w->fwd_off[e]; j < w->fwd_off[e + 1]; j++) {
            const int64_t g = w->fwd_dst[j];
            if (w->visits[g] >= w->max_visits) continue;
            if (mask == NULL) { /* the step's minute and layer, once (scores()) */
                if (!isfinite(t)) {
                    reset(w);
                    return WALK_FALLBACK;
                }
                mask = mask_at(w, t);
                if (mask == NULL) return WALK_NEED_MINUTE;
                const int64_t layer = (int64_t)floor(t / w->step_s + 0.5);
                k = layer > 0 ? layer : 0;
                if (k > top) k = top;
                slot = w->layer_slot[k];
            }
            if (!mask[g]) continue;
            if (from_live && !w->live[g]) continue; /* (follow() skips it after scoring) */
            /* the terms (readout_terms._link_terms) */
            const double shift = w->tau_s[g] / w->step_s;
            const double c_shift = shift + w->trip_layers[g];
            if (!(isfinite(shift) && isfinite(c_shift))) {
                reset(w);
                return WALK_FALLBACK;
            }
            const double v_next =
                interp_at(w->values, w->values_rows, n, k, shift, g, w->slope_v[k]);
            const double c_next = interp_at(w->cont, w->cont_rows, w->cont_width, k, c_shift,
                                            w->cell[g], w->slope_c[k]);
            const double gain = w->fare[g] + c_next, cost = w->cost[g];
            /* the pickup probability (scores(), the path with ages) */
            double p = prob_of(w, slot, g);
            double last = w->last_pass != NULL ? w->last_pass[g] : -INFINITY;
            {
                const double b = neg_pass_age(w, g); /* (-inf: none, no higher) */
                if (b > last) last = b;
            }
            {
                const double b = w->own_t[g];
                if (b > last) last = b;
            }
            double age = t - last;
            if (age < 0.0) age = 0.0;
            if (age < window_of(w, g)) {
                const double rate = w->rate_h[slot * n + g];
                p = -np_expm1(w, -rate * ((w->tau_s[g] + age) / 3600.0));
            }
            const double q = p * gain + (1.0 - p) * v_next - cost;
            /* the choice (follow()) */
            if (best_f < 0 || q > best_q) {
                best_f = g;
                best_q = q;
            }
            if (w->visits[g] == 0 && (new_f < 0 || q > new_q)) {
                new_f = g;
                new_q = q;
            }
        }
        const int64_t f = new_f >= 0 ? new_f : best_f;
        if (f < 0) break;
        if (w->trace != NULL) w->trace[w->n_route - w->n_prefix] = new_f >= 0 ? new_q : best_q;
        w->route[w->n_route++] = f;
        w->length += w->length_m[f];
        w->t += w->tau_s[f];
        w->own_t[f] = w->t;
        w->visits[f] += 1;
        w->e = f;
    }
    reset(w);
    return WALK_DONE;
}

/* stability.route_value: the expected net revenue of entering route[0:count] after the walk's
 * start (left at t0), then the policy; the route's own passes in own_t (left as found).
 * Returns 0 (the value in *out) or WALK_FALLBACK (an empty route, a non-finite shift or time:
 * Python's arithmetic decides those). The entry times are t0 plus a running sum of the links'
 * times (np.cumsum's order), the depleted probabilities through numpy's expm1 loop. */
int nagashi_route_value(Walk *w, const int64_t *route, int64_t count, double *since,
                        int64_t *ks, double *out) {
    const int64_t n = w->n, top = w->n_layers - 1, width = w->cont_width;
    const double dt = w->step_s, t0 = w->t0;
    if (count <= 0 || !isfinite(t0)) return WALK_FALLBACK;
    double *own = w->own_t;
    double run = 0.0;
    int rc = 0;
    own[w->start] = t0;
    for (int64_t i = 0; i < count; i++) {
        const int64_t f = route[i];
        const double t_in = t0 + run;
        const double tau_f = w->tau_s[f];
        run += tau_f;
        const double base = neg_pass_age(w, f);
        const double mine = own[f];
        since[i] = t_in - (mine > base ? mine : base);
        own[f] = t_in + tau_f;
        const double kf = floor(t_in / dt + 0.5);
        if (!isfinite(kf) || !isfinite(w->tau_s[f] / dt + w->trip_layers[f])) rc = WALK_FALLBACK;
        int64_t k = isfinite(kf) ? (int64_t)kf : 0;
        k = k < 0 ? 0 : k;
        k = top < k ? top : k;
        ks[i] = k;
    }
    own[w->start] = -INFINITY;
    for (int64_t i = 0; i < count; i++) own[route[i]] = -INFINITY;
    if (rc != 0) return rc;
    /* V after the last link (stability._end_value) */
    const int64_t end = route[count - 1];
    const double x_end = w->tau_s[end] / dt;
    if (!isfinite(x_end)) return WALK_FALLBACK;
    double r = interp_at(w->values, w->values_rows, n, ks[count - 1], x_end, end,
                         w->slope_v[ks[count - 1]]);
    for (int64_t i = count - 1; i >= 0; i--) {
        const int64_t f = route[i], k = ks[i], slot = w->layer_slot[k];
        /* C_i (stability._static splits the same shift as interp_at: k + a is a whole number
         * of layers either way) */
        const double c_next = interp_at(w->cont, w->cont_rows, width, k,
                                        w->tau_s[f] / dt + w->trip_layers[f], w->cell[f],
                                        w->slope_c[k]);
        /* P_i (stability._route_pickup) */
        double p = prob_of(w, slot, f);
        const double w_i = window_of(w, f);
        if (since[i] < w_i) {
            double s_i = since[i];
            s_i = s_i < 0.0 ? 0.0 : s_i;
            p = -np_expm1(w, -w->rate_h[slot * n + f] *
                                 ((w->tau_s[f] + (s_i < w_i ? s_i : w_i)) / 3600.0));
        }
        r = -w->cost[f] + p * (w->fare[f] + c_next) + (1.0 - p) * r;
    }
    *out = r;
    return 0;
}

/* stability._enterable: does every link of route[0:count] follow the one before (the walk's
 * start first) along a legal turn, and may it be entered when the cab gets there? Returns
 * ENTERABLE (yes) or 0 (no), WALK_NEED_MINUTE (need_minute: call again with its mask; nothing is kept) or
 * WALK_FALLBACK (a non-finite time: Python decides). */
int nagashi_enterable(Walk *w, const int64_t *route, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (route[i] < 0 || route[i] >= w->n) return 0;
    double t = w->t0;
    int64_t e = w->start;
    for (int64_t i = 0; i < count; i++) {
        const int64_t f = route[i];
        int found = 0;
        for (int64_t j = w->arc_off[e]; j < w->arc_off[e + 1]; j++) {
            if (w->arc_dst[j] == f) {
                found = 1;
                break;
            }
        }
        if (!found) return 0;
        if (!isfinite(t)) return WALK_FALLBACK;
        const uint8_t *mask = mask_at(w, t);
        if (mask == NULL) return WALK_NEED_MINUTE;
        if (!mask[f]) return 0;
        t += w->tau_s[f];
        e = f;
    }
    return ENTERABLE;
}

/* agent.planner.fleet.SnapshotReadout.table_for's overlay of one cab (fleet.CabOverlay): the
 * snapshot's part set once per snapshot and table, the cab's per call; walk_c.CabInputs,
 * field for field */
typedef struct {
    int64_t n, slots, n_total;
    const int32_t *g2l;       /* global edge id -> local link, or -1 */
    const double *planned;    /* the snapshot's planned passes per link */
    const double *window_s, *tau_s, *rate_h, *prob; /* the table's */
    const uint8_t *vacant;    /* another vacant cab now on the link */
    double scale;             /* claims per hour of one planned pass */
    loop_fn expm1;
    void *expm1_data;
    int64_t claims;           /* the snapshot claims some link (else the table's W and P) */
    /* the cab */
    const int64_t *route;     /* its last heartbeat's route, global ids */
    int64_t n_route, own_link; /* own_link: its heartbeat's link (global; -1: none) */
    const int64_t *pass_link; /* its own passes: local links and the times they were passed */
    const double *pass_t;
    int64_t n_pass, alone;    /* alone: its own link, local, where it is the only vacant cab */
    int64_t seen;             /* the ages of the links with a vacant cab are kept */
    double now_s, age;
    /* out: links[0:n_claims] (sorted), then links[n_claims:n_claims + n_passes] (sorted); vals:
     * the claimed links' W, then their P per slot (slot-major), then the passes' seen ages */
    int64_t n_claims, n_passes;
} Cab;

static void sort_pairs(int64_t *key, double *val, int64_t count) {
    for (int64_t i = 1; i < count; i++) { /* insertion: a few dozen links, stable */
        const int64_t k = key[i];
        const double v = val != NULL ? val[i] : 0.0;
        int64_t j = i - 1;
        while (j >= 0 && key[j] > k) {
            key[j + 1] = key[j];
            if (val != NULL) val[j + 1] = val[j];
            j--;
        }
        key[j + 1] = k;
        if (val != NULL) val[j + 1] = v;
    }
}

/* Fills links (at least n_route + n_pass + 1) and vals (at least n_route * (slots + 1) +
 * n_pass + 1) as table_for's numpy does it: the route's links the snapshot claims, but
 * without the cab's own claim (1 / (1 / W + extra / 3600), P = -expm1(-rate * ((tau + W) /
 * 3600)) where the others still claim it, the table's own W and P where none does); the seen
 * ages of the cab's passes, min(vacant ? age : inf, now - t) (inf on its own link when it is
 * alone there). Returns 0, or -1 for a pass outside the graph (numpy decides). */
int nagashi_cab_overlay(Cab *c, int64_t *links, double *vals) {
    const int64_t n = c->n, slots = c->slots;
    int64_t k = 0;
    for (int64_t i = 0; i < c->n_pass; i++)
        if (c->pass_link[i] < 0 || c->pass_link[i] >= n) return -1;
    if (c->claims) {
        for (int64_t i = 0; i < c->n_route; i++) {
            const int64_t id = c->route[i];
            if (id == c->own_link || id < 0 || id >= c->n_total) continue;
            const int64_t l = c->g2l[id];
            if (l < 0 || !(c->planned[l] > 0.0)) continue;
            links[k++] = l;
        }
        sort_pairs(links, NULL, k);
        int64_t u = 0; /* (a link twice on the route has one value) */
        for (int64_t i = 0; i < k; i++)
            if (u == 0 || links[u - 1] != links[i]) links[u++] = links[i];
        k = u;
        for (int64_t i = 0; i < k; i++) {
            const int64_t l = links[i];
            double extra = c->planned[l] - 1.0;
            extra = (extra > 0.0 ? extra : 0.0) * c->scale;
            const double w0 = c->window_s[l];
            if (extra > 0.0 && w0 > 0.0) {
                const double w = 1.0 / (1.0 / w0 + extra / 3600.0);
                vals[i] = w;
                for (int64_t s = 0; s < slots; s++) {
                    double x = -c->rate_h[s * n + l] * ((c->tau_s[l] + w) / 3600.0), y;
                    char *args[2] = {(char *)&x, (char *)&y};
                    intptr_t dims[1] = {1}, steps[2] = {sizeof(double), sizeof(double)};
                    c->expm1(args, dims, steps, c->expm1_data);
                    vals[k + s * k + i] = -y;
                }
            } else {
                vals[i] = w0;
                for (int64_t s = 0; s < slots; s++) vals[k + s * k + i] = c->prob[s * n + l];
            }
        }
    }
    c->n_claims = k;
    int64_t m = 0;
    if (c->seen && (c->alone >= 0 || c->n_pass > 0)) {
        int64_t *pl = links + k;
        double *pv = vals + k * (slots + 1);
        int alone_listed = 0;
        for (int64_t i = 0; i < c->n_pass; i++) {
            pl[m] = c->pass_link[i];
            pv[m++] = c->now_s - c->pass_t[i];
            if (c->pass_link[i] == c->alone) alone_listed = 1;
        }
        if (c->alone >= 0 && !alone_listed) {
            pl[m] = c->alone;
            pv[m++] = INFINITY;
        }
        sort_pairs(pl, pv, m);
        for (int64_t i = 0; i < m; i++) {
            const int64_t l = pl[i];
            double at = c->vacant[l] ? c->age : INFINITY;
            if (l == c->alone) at = INFINITY;
            const double a = pv[i];
            pv[i] = (at <= a || isnan(at)) ? at : a; /* np.minimum(at, a) */
        }
    }
    c->n_passes = m;
    return 0;
}

/* deadends.live_links of a graph in one go (deadends._peel_arcs' greatest set, by a queue
 * instead of rounds): the allowed links each of which has a forward turn (no U-turn: the
 * target's end is not the source's start) into the set, or a legal turn onto a link outside
 * the graph (more turns than arcs in the graph). arc_off/arc_dst: the graph's arcs by source;
 * work: 3 n + 1 + arcs int32 (n + arcs < 2^31). The greatest set is the same whatever order
 * the queue takes the links in. */
/* a legal turn of link i onto a link outside the graph: more turns than arcs in the graph */
static inline int turns_off_graph(const int64_t *turn_off, const int64_t *arc_off, int64_t i) {
    return turn_off[i + 1] - turn_off[i] > arc_off[i + 1] - arc_off[i];
}

void nagashi_live(int64_t n, const int64_t *arc_off, const int64_t *arc_dst,
                  const int64_t *turn_off, const int32_t *u_node, const int32_t *v_node,
                  const uint8_t *allowed, uint8_t *live, int32_t *work) {
    int32_t *ways_on = work, *queue = work + n, *in_off = work + 2 * n;
    int32_t *in_src = work + 3 * n + 1;
    for (int64_t i = 0; i < n; i++) {
        live[i] = allowed[i] != 0;
        ways_on[i] = 0;
        queue[i] = 0; /* (first each target's count of sources placed) */
        in_off[i] = 0;
    }
    in_off[n] = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t a = arc_off[i]; a < arc_off[i + 1]; a++) {
            const int64_t j = arc_dst[a];
            if (v_node[j] == u_node[i]) continue; /* a U-turn */
            in_off[j + 1]++;
            if (live[j]) ways_on[i]++;
        }
    for (int64_t j = 0; j < n; j++) in_off[j + 1] += in_off[j];
    for (int64_t i = 0; i < n; i++) /* in_src by target, each target's sources in order */
        for (int64_t a = arc_off[i]; a < arc_off[i + 1]; a++) {
            const int64_t j = arc_dst[a];
            if (v_node[j] != u_node[i]) in_src[in_off[j] + queue[j]++] = (int32_t)i;
        }
    int64_t head = 0, tail = 0;
    for (int64_t i = 0; i < n; i++) {
        if (live[i] && ways_on[i] == 0 && !turns_off_graph(turn_off, arc_off, i)) {
            live[i] = 0;
            queue[tail++] = (int32_t)i;
        }
    }
    while (head < tail) { /* each link dies once: the sources of its turns lose one way on */
        const int64_t j = queue[head++];
        for (int64_t t = in_off[j]; t < in_off[j + 1]; t++) {
            const int32_t i = in_src[t];
            if (!live[i] || --ways_on[i] > 0) continue;
            if (turns_off_graph(turn_off, arc_off, i)) continue;
            live[i] = 0;
            queue[tail++] = i;
        }
    }
}

/* numpy's expm1 loop called as the walk calls it, one element at a time (the load check) */
void nagashi_expm1_each(loop_fn fn, void *data, const double *x, double *out, int64_t count) {
    Walk w;
    w.expm1 = fn;
    w.expm1_data = data;
    for (int64_t i = 0; i < count; i++) out[i] = np_expm1(&w, x[i]);
}

#ifndef NAGASHI_NO_PYTHON
static struct PyModuleDef walk_module = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&walk_module); }
#endif
