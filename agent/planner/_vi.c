/* The planner's backward pass in C: agent/planner/_kernel_numba.py's _run_gemv statement for
 * statement, so the same bits as the numpy path (agent/planner/core.py _backward_pass):
 * element-wise operations one at a time in numpy's order, numpy's pairwise summation, and the
 * drop-off product by numpy's own cblas_dgemv (its address is passed in). Built with
 * -ffp-contract=off (setup.py): no fused multiply-add, which numpy does not use either.
 *
 * Loaded with ctypes by agent/planner/kernel_c.py (no Python API is used; the module
 * initialiser below only lets the build tools treat it as an extension). */
#include <Python.h>
#include <stdint.h>
#include <math.h>

typedef void (*gemv_fn)(int32_t order, int32_t trans, int64_t m, int64_t n, double alpha,
                        const double *a, int64_t lda, const double *x, int64_t incx,
                        double beta, double *y, int64_t incy);

/* kernel_c.Pass: the inputs (as _kernel_numba.Arrays) and the outputs (as Work) */
typedef struct {
    int64_t n_layers, n, nc1, n_cz, n_early, n_deg, n_members, n_full, top_k, n_cells;
    const int64_t *v_off;
    const double *v_wpos, *v_wneg;
    const int64_t *c_off;
    const double *c_wpos, *c_wneg, *fare, *cost;
    const double *prob, *prob_early, *penalty; /* rows of n_cz */
    const int64_t *layer_slot, *layer_minute, *srcs, *col_flat, *col_start, *col_len;
    const int64_t *members, *member_cell;
    const double *inv_count;
    const uint8_t *empty;
    const int64_t *full_idx;
    const double *p_out;
    const int64_t *top_idx; /* (top_k, n_cells) */
    const double *top_val;
    double share, inv_n, inv_nc1, inv_full;
    const double *p_in;
    int64_t order, lda;
    gemv_fn gemv;
    double *vflat, *cflat, *row_mean, *cont_mean, *slope_v, *slope_c, *exit_value;
    double *q_ext, *best, *u, *ufull, *dot;
} Pass;

#define NO_TRANS 111

/* numpy's pairwise sum of a[0:n] (np.add.reduce): blocks of 8 accumulators up to 128 elements,
 * halves above (the first rounded down to a multiple of 8) */
static double pairwise(const double *a, int64_t n) {
    if (n < 8) {
        double res = 0.0;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r0 = a[0], r1 = a[1], r2 = a[2], r3 = a[3];
        double r4 = a[4], r5 = a[5], r6 = a[6], r7 = a[7];
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
        double res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return pairwise(a, half) + pairwise(a + half, n - half);
}

/* Q = V~ + P (F + C~ - V~) - cost + penalty into q_ext */
static void action_values(const Pass *p, int64_t k, double sv, double sc, const double *prob,
                          const double *penalty) {
    const double *v0r = p->vflat + k * p->n, *v1r = p->vflat + (k + 1) * p->n;
    const double *c0r = p->cflat + k * p->nc1, *c1r = p->cflat + (k + 1) * p->nc1;
    for (int64_t i = 0; i < p->n_cz; i++) {
        double v0 = v0r[p->v_off[i]];
        double v1 = v1r[p->v_off[i]];
        double c0 = c0r[p->c_off[i]];
        double c1 = c1r[p->c_off[i]];
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
        double q = v1 + c1;
        q = q - p->cost[i];
        p->q_ext[i] = q + penalty[i];
    }
}

/* the maximum of q_ext over each source's successors, per out-degree rank (np.maximum: NaN
 * propagates); returns the sources' count */
static int64_t rank_max(const Pass *p) {
    if (p->n_deg == 0) return 0;
    int64_t n0 = p->col_len[0];
    double *best = p->best;
    const double *q = p->q_ext;
    for (int64_t i = 0; i < n0; i++) best[i] = q[p->col_flat[i]];
    for (int64_t d = 1; d < p->n_deg; d++) {
        const int64_t *col = p->col_flat + p->col_start[d];
        for (int64_t i = 0; i < p->col_len[d]; i++) {
            double x = best[i];
            double y = q[col[i]];
            if (!(x >= y || x != x)) best[i] = y;
        }
    }
    return n0;
}

/* U per cell into u; returns u_out = share * mean of U over the cells with members */
static double cell_values(const Pass *p, const double *row) {
    double *u = p->u;
    for (int64_t c = 0; c < p->n_cells; c++) u[c] = 0.0;
    for (int64_t j = 0; j < p->n_members; j++) u[p->member_cell[j]] += row[p->members[j]];
    for (int64_t c = 0; c < p->n_cells; c++) u[c] = u[c] * p->inv_count[c];
    double u_out = 0.0;
    if (p->n_full > 0) {
        for (int64_t j = 0; j < p->n_full; j++) p->ufull[j] = u[p->full_idx[j]];
        u_out = p->share * pairwise(p->ufull, p->n_full) * p->inv_full;
    }
    for (int64_t c = 0; c < p->n_cells; c++)
        if (p->empty[c]) u[c] = u_out;
    return u_out;
}

static double layer(const Pass *p, int64_t k, double u_out_next, const double *prob,
                    const double *penalty) {
    double sv = p->row_mean[k + 1] - p->row_mean[k + 2];
    double sc = p->cont_mean[k + 1] - p->cont_mean[k + 2];
    p->slope_v[k] = sv;
    p->slope_c[k] = sc;
    action_values(p, k, sv, sc, prob, penalty);
    int64_t n0 = rank_max(p);
    double *row = p->vflat + k * p->n;
    for (int64_t j = 0; j < p->n; j++) row[j] = u_out_next;
    for (int64_t i = 0; i < n0; i++) {
        double b = p->best[i];
        row[p->srcs[i]] = b == -INFINITY ? u_out_next : b;
    }
    p->row_mean[k] = pairwise(row, p->n) * p->inv_n;
    p->exit_value[k] = u_out_next;
    return cell_values(p, row);
}

static void top_k_dot(const Pass *p) {
    int64_t nc = p->n_cells;
    for (int64_t c = 0; c < nc; c++) {
        double res = p->top_val[c] * p->u[p->top_idx[c]];
        for (int64_t j = 1; j < p->top_k; j++)
            res = res + p->top_val[j * nc + c] * p->u[p->top_idx[j * nc + c]];
        p->dot[c] = res;
    }
}

static void finish(const Pass *p, int64_t k, double u_out) {
    int64_t nc = p->n_cells;
    double *crow = p->cflat + k * p->nc1;
    for (int64_t c = 0; c < nc; c++) crow[c] = p->dot[c];
    if (u_out != 0.0 || u_out != u_out)
        for (int64_t c = 0; c < nc; c++) crow[c] = crow[c] + p->p_out[c] * u_out;
    crow[nc] = u_out;
    p->cont_mean[k] = pairwise(crow, p->nc1) * p->inv_nc1;
}

/* all layers, k = K-1 .. 0; 0 when done, -1 when the drop-off product has no BLAS to call */
int nagashi_backward(const Pass *p) {
    if (p->top_k == 0 && p->n_cells > 0 && p->gemv == NULL) return -1;
    double u_out_next = 0.0;
    for (int64_t k = p->n_layers - 1; k >= 0; k--) {
        const double *prob = k < p->n_early ? p->prob_early + k * p->n_cz
                                            : p->prob + p->layer_slot[k] * p->n_cz;
        const double *penalty = p->penalty + p->layer_minute[k] * p->n_cz;
        double u_out = layer(p, k, u_out_next, prob, penalty);
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
void nagashi_gemv(gemv_fn gemv, int64_t order, int64_t m, const double *a, int64_t lda,
                  const double *x, double *y) {
    gemv((int32_t)order, NO_TRANS, m, m, 1.0, a, lda, x, 1, 0.0, y, 1);
}

static struct PyModuleDef vi_module = {PyModuleDef_HEAD_INIT, "_vi", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__vi(void) { return PyModule_Create(&vi_module); }
