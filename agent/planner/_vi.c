/* The planner's backward pass in C: the arithmetic of agent/planner/_kernel_numba.py's
 * _run_gemv, so the same bits as the numpy path (agent/planner/core.py _backward_pass):
 * element-wise operations one at a time in numpy's order, numpy's pairwise summation, and the
 * drop-off product by numpy's own cblas_dgemv (its address is passed in). Built with
 * -ffp-contract=off (setup.py): no fused multiply-add, which numpy does not use either.
 *
 * What differs from numba's loops is only the order in which independent values are computed
 * (issue 20): the action values four links at a time with AVX2 where the CPU has it (the same
 * operations on each link), each source's successor maximum over its degrees in one go without
 * a branch on the data, four sources at a time with AVX2, and each cell's sum of its members' values (the same additions in the
 * same order) four cells at a time, from the members sorted by cell (kernel_c.Order).
 *
 * Loaded with ctypes by agent/planner/kernel_c.py (no Python API is used; the module
 * initialiser below only lets the build tools treat it as an extension; -DNAGASHI_NO_PYTHON
 * leaves it out, for tests/agent/vi_driver.c, which runs the pass as a program: on aarch64
 * under qemu, tests/agent/test_kernel_c_aarch64.py). */
#ifndef NAGASHI_NO_PYTHON
#include <Python.h>
#endif
#include <stdint.h>
#include <math.h>
#include <stddef.h> /* NULL without Python.h (-DNAGASHI_NO_PYTHON) */
/* The value type: double, the planner's (the installed build's machine code is the same as
 * with double written out). Built with -DNAGASHI_FLOAT32 (only by ``nagashi bench float32``,
 * never installed), the same statements on float32 values and 32-bit offsets: what a float32
 * plan version would save, measured, not a planner the cab runs. The scalars (share, inv_n,
 * ...) stay double, so both builds take one struct. */
#ifdef NAGASHI_FLOAT32
typedef float real;
typedef int32_t idx_t;
#else
typedef double real;
typedef int64_t idx_t;
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(NAGASHI_NO_SIMD)
#include <immintrin.h>
#define NAGASHI_AVX2 1
#endif

typedef void (*gemv_fn)(int32_t order, int32_t trans, int64_t m, int64_t n, real alpha,
                        const real *a, int64_t lda, const real *x, int64_t incx,
                        real beta, real *y, int64_t incy);

/* kernel_c.Pass: the inputs (as _kernel_numba.Arrays) and the outputs (as Work) */
typedef struct {
    int64_t n_layers, n, nc1, n_cz, n_early, n_deg, n_members, n_full, top_k, n_cells;
    const idx_t *v_off;
    const real *v_wpos, *v_wneg;
    const idx_t *c_off;
    const real *c_wpos, *c_wneg, *fare, *cost;
    const real *prob, *prob_early, *penalty; /* rows of n_cz */
    const int64_t *layer_slot, *layer_minute, *srcs, *col_flat, *col_start, *col_len;
    const int64_t *members, *member_cell;
    const real *inv_count;
    const uint8_t *empty;
    const int64_t *full_idx;
    const real *p_out;
    const int64_t *top_idx; /* (top_k, n_cells) */
    const real *top_val;
    double share, inv_n, inv_nc1, inv_full;
    const real *p_in;
    int64_t order, lda;
    gemv_fn gemv;
    real *vflat, *cflat, *row_mean, *cont_mean, *slope_v, *slope_c, *exit_value;
    real *q_ext, *best, *u, *ufull, *dot;
    /* kernel_c.Order, derived from the inputs above: the links that are no source (V there is
     * the exit value), the members stably sorted by cell and each cell's run of them */
    int64_t n_fill, n_runs;
    const int64_t *fill_idx, *run_members, *run_cell, *run_start;
    int64_t simd; /* 0: the scalar action values even where the CPU has AVX2 (the same bits) */
} Pass;

#define NO_TRANS 111

/* numpy's pairwise sum of a[0:n] (np.add.reduce): blocks of 8 accumulators up to 128 elements,
 * halves above (the first rounded down to a multiple of 8) */
static real pairwise(const real *a, int64_t n) {
    if (n < 8) {
        real res = 0.0;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        real r0 = a[0], r1 = a[1], r2 = a[2], r3 = a[3];
        real r4 = a[4], r5 = a[5], r6 = a[6], r7 = a[7];
        int64_t i = 8, end = n - (n % 8);
        for (; i < end; i += 8) {
            r0 += a[i];
            r1 += a[i + 1];
            r2 += a[i + 2];
            r3 += a[i + 3];
            r4 += a[i + 4];
            r5 += a[i + 5];
            r6 += a[i + 6];
            r7 += a[i + 7];
        }
        real res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return pairwise(a, half) + pairwise(a + half, n - half);
}

/* Q = V~ + P (F + C~ - V~) - cost + penalty into q_ext */
static void action_values_from(const Pass *p, int64_t k, real sv, real sc, const real *prob,
                               const real *penalty, int64_t from) {
    const real *v0r = p->vflat + k * p->n, *v1r = p->vflat + (k + 1) * p->n;
    const real *c0r = p->cflat + k * p->nc1, *c1r = p->cflat + (k + 1) * p->nc1;
    for (int64_t i = from; i < p->n_cz; i++) {
        real v0 = v0r[p->v_off[i]];
        real v1 = v1r[p->v_off[i]];
        real c0 = c0r[p->c_off[i]];
        real c1 = c1r[p->c_off[i]];
        v1 = v1 - v0;
        v1 = v1 * p->v_wpos[i];
        v1 = v1 + v0;
        v1 = v1 + p->v_wneg[i] * sv;
        c1 = c1 - c0;
        c1 = c1 * p->c_wpos[i];
        c1 = c1 + c0;
        c1 = c1 + p->c_wneg[i] * sc;
        c1 = c1 + p->fare[i];
        c1 = c1 - v1;
        c1 = c1 * prob[i];
        real q = v1 + c1;
        q = q - p->cost[i];
        p->q_ext[i] = q + penalty[i];
    }
}

#ifdef NAGASHI_AVX2
/* one AVX2 register of values: four doubles, or eight floats in the float32 build (32-bit
 * offsets, so eight to a register too) */
/* V_AT: the values at LANES offsets, loaded one by one into a register, not by AVX2's gather
 * instruction (the whole pass 1.2-1.4x faster so on an AMD EPYC, whose gathers are slow) */
#ifdef NAGASHI_FLOAT32
#define LANES 8
typedef __m256 vec;
#define V_SET1 _mm256_set1_ps
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_AT(b, o) _mm256_set_ps((b)[(o)[7]], (b)[(o)[6]], (b)[(o)[5]], (b)[(o)[4]], (b)[(o)[3]], \
                              (b)[(o)[2]], (b)[(o)[1]], (b)[(o)[0]])
#else
#define LANES 4
typedef __m256d vec;
#define V_SET1 _mm256_set1_pd
#define V_LOAD _mm256_loadu_pd
#define V_STORE _mm256_storeu_pd
#define V_ADD _mm256_add_pd
#define V_SUB _mm256_sub_pd
#define V_MUL _mm256_mul_pd
#define V_AT(b, o) _mm256_set_pd((b)[(o)[3]], (b)[(o)[2]], (b)[(o)[1]], (b)[(o)[0]])
#endif

/* the same, LANES links at a time: the same operations on each link in the same order (AVX2
 * without FMA, so each product is rounded before its sum, as above); the links left over by
 * action_values_from */
__attribute__((target("avx2"))) static void action_values_avx2(const Pass *p, int64_t k,
                                                               real sv, real sc,
                                                               const real *prob,
                                                               const real *penalty) {
    const real *v0r = p->vflat + k * p->n, *v1r = p->vflat + (k + 1) * p->n;
    const real *c0r = p->cflat + k * p->nc1, *c1r = p->cflat + (k + 1) * p->nc1;
    const vec vsv = V_SET1(sv), vsc = V_SET1(sc);
    int64_t i = 0;
    for (; i + LANES <= p->n_cz; i += LANES) {
        const idx_t *vo = p->v_off + i, *co = p->c_off + i;
        vec v0 = V_AT(v0r, vo);
        vec v1 = V_AT(v1r, vo);
        vec c0 = V_AT(c0r, co);
        vec c1 = V_AT(c1r, co);
        v1 = V_SUB(v1, v0);
        v1 = V_MUL(v1, V_LOAD(p->v_wpos + i));
        v1 = V_ADD(v1, v0);
        v1 = V_ADD(v1, V_MUL(V_LOAD(p->v_wneg + i), vsv));
        c1 = V_SUB(c1, c0);
        c1 = V_MUL(c1, V_LOAD(p->c_wpos + i));
        c1 = V_ADD(c1, c0);
        c1 = V_ADD(c1, V_MUL(V_LOAD(p->c_wneg + i), vsc));
        c1 = V_ADD(c1, V_LOAD(p->fare + i));
        c1 = V_SUB(c1, v1);
        c1 = V_MUL(c1, V_LOAD(prob + i));
        vec q = V_ADD(v1, c1);
        q = V_SUB(q, V_LOAD(p->cost + i));
        V_STORE(p->q_ext + i, V_ADD(q, V_LOAD(penalty + i)));
    }
    action_values_from(p, k, sv, sc, prob, penalty, i);
}

static int has_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init(); /* (libgcc's constructor does it too; harmless twice) */
        known = __builtin_cpu_supports("avx2") ? 1 : 0; /* the CPU's and the OS's (YMM state) */
    }
    return known;
}
#endif

static void action_values(const Pass *p, int64_t k, real sv, real sc, const real *prob,
                          const real *penalty) {
#ifdef NAGASHI_AVX2
    if (p->simd && has_avx2()) {
        action_values_avx2(p, k, sv, sc, prob, penalty);
        return;
    }
#endif
    action_values_from(p, k, sv, sc, prob, penalty, 0);
}

/* np.maximum(x, y) without a branch on the data: y when it is larger (maxsd, which gives x
 * when either is NaN and when they are equal), y when y alone is NaN */
static inline real np_max(real x, real y) {
    real r = y > x ? y : x;
    if (y != y && x == x) r = y;
    return r;
}

/* V of a source: its successor maximum, or the exit value where no successor is allowed */
static inline real source_value(real b, real u_out_next) {
    return b == -INFINITY ? u_out_next : b;
}

/* the successor maximum of the sources i in [lo, hi), each of out-degree d (columns 0..d) */
static void successor_max_of(const Pass *p, real *row, real u_out_next, int64_t d, int64_t lo,
                             int64_t hi) {
    const real *q = p->q_ext;
    const int64_t *srcs = p->srcs, *cf = p->col_flat, *cs = p->col_start;
    if (d == 0) {
        for (int64_t i = lo; i < hi; i++) row[srcs[i]] = source_value(q[cf[i]], u_out_next);
    } else if (d == 1) {
        const int64_t *c1 = cf + cs[1];
        for (int64_t i = lo; i < hi; i++)
            row[srcs[i]] = source_value(np_max(q[cf[i]], q[c1[i]]), u_out_next);
    } else {
        for (int64_t i = lo; i < hi; i++) {
            real b = q[cf[i]];
            for (int64_t e = 1; e <= d; e++) b = np_max(b, q[cf[cs[e] + i]]);
            row[srcs[i]] = source_value(b, u_out_next);
        }
    }
}

#ifdef NAGASHI_AVX2
/* four sources at a time (their successors' q loaded one by one into a register, as V_AT):
 * the same selections as np_max and source_value, so the same bits; the values stored one by
 * one (AVX2 has no scatter). This loop was 56 % of the pass while scalar. */
#ifdef NAGASHI_FLOAT32
typedef __m128 qvec;
#define Q_AT(b, o) _mm_set_ps((b)[(o)[3]], (b)[(o)[2]], (b)[(o)[1]], (b)[(o)[0]])
#define Q_SET1 _mm_set1_ps
#define Q_CMP _mm_cmp_ps
#define Q_AND _mm_and_ps
#define Q_BLEND _mm_blendv_ps
#define Q_STORE _mm_storeu_ps
#else
typedef __m256d qvec;
#define Q_AT V_AT
#define Q_SET1 _mm256_set1_pd
#define Q_CMP _mm256_cmp_pd
#define Q_AND _mm256_and_pd
#define Q_BLEND _mm256_blendv_pd
#define Q_STORE _mm256_storeu_pd
#endif

/* np_max(x, y): y where y > x, then y where y alone is NaN */
__attribute__((target("avx2"))) static inline qvec q_max(qvec x, qvec y) {
    qvec r = Q_BLEND(x, y, Q_CMP(y, x, _CMP_GT_OQ));
    return Q_BLEND(r, y, Q_AND(Q_CMP(y, y, _CMP_UNORD_Q), Q_CMP(x, x, _CMP_ORD_Q)));
}

__attribute__((target("avx2"))) static int64_t successor_max_avx2(const Pass *p, real *row,
                                                                  real u_out_next, int64_t d,
                                                                  int64_t lo, int64_t hi) {
    const real *q = p->q_ext;
    const int64_t *srcs = p->srcs, *cf = p->col_flat, *cs = p->col_start;
    const qvec u = Q_SET1(u_out_next), ninf = Q_SET1(-INFINITY);
    real out[4];
    int64_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        qvec b = Q_AT(q, cf + i);
        for (int64_t e = 1; e <= d; e++) b = q_max(b, Q_AT(q, cf + cs[e] + i));
        Q_STORE(out, Q_BLEND(b, u, Q_CMP(b, ninf, _CMP_EQ_OQ)));
        row[srcs[i]] = out[0];
        row[srcs[i + 1]] = out[1];
        row[srcs[i + 2]] = out[2];
        row[srcs[i + 3]] = out[3];
    }
    return i;
}
#endif

/* the successor maximum of each source into its row: per out-degree rank, in rank order
 * (core._successor_max's np.maximum, NaN propagating), the sources of each degree as one run
 * (sources are sorted by out-degree, so column d holds a prefix of them) */
static void successor_max(const Pass *p, real *row, real u_out_next) {
    const int64_t *cl = p->col_len;
    int64_t nd = p->n_deg;
    for (int64_t d = nd - 1; d >= 0; d--) {
        int64_t lo = d + 1 < nd ? cl[d + 1] : 0, hi = cl[d];
#ifdef NAGASHI_AVX2
        if (p->simd && has_avx2()) lo = successor_max_avx2(p, row, u_out_next, d, lo, hi);
#endif
        successor_max_of(p, row, u_out_next, d, lo, hi);
    }
}

/* U per cell into u (numpy's order: each cell's members added one by one from 0.0, four
 * cells at a time so that their sums overlap); returns u_out = share * mean of U over the
 * cells with members */
static real cell_values(const Pass *p, const real *row) {
    real *u = p->u;
    const int64_t *m = p->run_members, *rs = p->run_start, *rc = p->run_cell;
    for (int64_t c = 0; c < p->n_cells; c++) u[c] = 0.0;
    int64_t r = 0;
    for (; r + 4 <= p->n_runs; r += 4) {
        real a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        int64_t s0 = rs[r], s1 = rs[r + 1], s2 = rs[r + 2], s3 = rs[r + 3], e3 = rs[r + 4];
        int64_t l0 = s1 - s0, l1 = s2 - s1, l2 = s3 - s2, l3 = e3 - s3;
        int64_t t = 0, lm = l0 < l1 ? l0 : l1;
        lm = lm < l2 ? lm : l2;
        lm = lm < l3 ? lm : l3;
        for (; t < lm; t++) {
            a0 += row[m[s0 + t]];
            a1 += row[m[s1 + t]];
            a2 += row[m[s2 + t]];
            a3 += row[m[s3 + t]];
        }
        for (int64_t j = t; j < l0; j++) a0 += row[m[s0 + j]];
        for (int64_t j = t; j < l1; j++) a1 += row[m[s1 + j]];
        for (int64_t j = t; j < l2; j++) a2 += row[m[s2 + j]];
        for (int64_t j = t; j < l3; j++) a3 += row[m[s3 + j]];
        u[rc[r]] = a0;
        u[rc[r + 1]] = a1;
        u[rc[r + 2]] = a2;
        u[rc[r + 3]] = a3;
    }
    for (; r < p->n_runs; r++) {
        real a = 0.0;
        for (int64_t j = rs[r]; j < rs[r + 1]; j++) a += row[m[j]];
        u[rc[r]] = a;
    }
    for (int64_t c = 0; c < p->n_cells; c++) u[c] = u[c] * p->inv_count[c];
    real u_out = 0.0;
    if (p->n_full > 0) {
        for (int64_t j = 0; j < p->n_full; j++) p->ufull[j] = u[p->full_idx[j]];
        u_out = p->share * pairwise(p->ufull, p->n_full) * p->inv_full;
    }
    for (int64_t c = 0; c < p->n_cells; c++)
        if (p->empty[c]) u[c] = u_out;
    return u_out;
}

static real layer(const Pass *p, int64_t k, real u_out_next, const real *prob,
                    const real *penalty) {
    real sv = p->row_mean[k + 1] - p->row_mean[k + 2];
    real sc = p->cont_mean[k + 1] - p->cont_mean[k + 2];
    p->slope_v[k] = sv;
    p->slope_c[k] = sc;
    action_values(p, k, sv, sc, prob, penalty);
    real *row = p->vflat + k * p->n;
    for (int64_t j = 0; j < p->n_fill; j++) row[p->fill_idx[j]] = u_out_next;
    successor_max(p, row, u_out_next);
    p->row_mean[k] = pairwise(row, p->n) * p->inv_n;
    p->exit_value[k] = u_out_next;
    return cell_values(p, row);
}

static void top_k_dot(const Pass *p) {
    int64_t nc = p->n_cells;
    for (int64_t c = 0; c < nc; c++) {
        real res = p->top_val[c] * p->u[p->top_idx[c]];
        for (int64_t j = 1; j < p->top_k; j++)
            res = res + p->top_val[j * nc + c] * p->u[p->top_idx[j * nc + c]];
        p->dot[c] = res;
    }
}

static void finish(const Pass *p, int64_t k, real u_out) {
    int64_t nc = p->n_cells;
    real *crow = p->cflat + k * p->nc1;
    for (int64_t c = 0; c < nc; c++) crow[c] = p->dot[c];
    if (u_out != 0.0 || u_out != u_out)
        for (int64_t c = 0; c < nc; c++) crow[c] = crow[c] + p->p_out[c] * u_out;
    crow[nc] = u_out;
    p->cont_mean[k] = pairwise(crow, p->nc1) * p->inv_nc1;
}

/* all layers, k = K-1 .. 0; 0 when done, -1 when the drop-off product has no BLAS to call */
int nagashi_backward(const Pass *p) {
    if (p->top_k == 0 && p->n_cells > 0 && p->gemv == NULL) return -1;
    real u_out_next = 0.0;
    for (int64_t k = p->n_layers - 1; k >= 0; k--) {
        const real *prob = k < p->n_early ? p->prob_early + k * p->n_cz
                                            : p->prob + p->layer_slot[k] * p->n_cz;
        const real *penalty = p->penalty + p->layer_minute[k] * p->n_cz;
        real u_out = layer(p, k, u_out_next, prob, penalty);
        if (p->top_k > 0)
            top_k_dot(p);
        else if (p->n_cells > 0)
            p->gemv((int32_t)p->order, NO_TRANS, p->n_cells, p->n_cells, 1.0, p->p_in, p->lda,
                    p->u, 1, 0.0, p->dot, 1);
        finish(p, k, u_out);
        u_out_next = u_out;
    }
    return 0;
}

/* the drop-off product alone, once (kernel_c.gemv_matches_numpy) */
void nagashi_gemv(gemv_fn gemv, int64_t order, int64_t m, const real *a, int64_t lda,
                  const real *x, real *y) {
    gemv((int32_t)order, NO_TRANS, m, m, 1.0, a, lda, x, 1, 0.0, y, 1);
}

#ifndef NAGASHI_NO_PYTHON
static struct PyModuleDef vi_module = {PyModuleDef_HEAD_INIT, "_vi", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__vi(void) { return PyModule_Create(&vi_module); }
#endif
