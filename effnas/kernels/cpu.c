/* effnas's CPU kernels: plain C, compiled on first use by effnas/kernels/__init__.py.

   Layout everywhere: activations NHWC float32 (the memory of a channels-last NCHW tensor),
   depthwise weights as (K*K, C). Batches are split across POSIX threads by image.
*/
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Depthwise convolution's weight gradient, the plain loop: gw (K*K, C) += sum over images
   [n0, n1) and output positions of gy * the input under each tap, channels [c0, c1).
   x (N,H,W,C), gy (N,Ho,Wo,C). Used for the channels left over by the blocked version below,
   and for kernel sizes other than 3 and 5. */
static void dw_weight_grad_plain(const float *restrict x, const float *restrict gy, float *restrict gw,
                                 int H, int W, int C, int Ho, int Wo, int K, int s, int p, int n0, int n1,
                                 int c0, int c1) {
  for (int n = n0; n < n1; n++)
    for (int oh = 0; oh < Ho; oh++)
      for (int ow = 0; ow < Wo; ow++) {
        const float *restrict g = gy + (((size_t)n * Ho + oh) * Wo + ow) * C;
        for (int kh = 0; kh < K; kh++) {
          int ih = oh * s - p + kh;
          if (ih < 0 || ih >= H) continue;
          for (int kw = 0; kw < K; kw++) {
            int iw = ow * s - p + kw;
            if (iw < 0 || iw >= W) continue;
            const float *restrict xp = x + (((size_t)n * H + ih) * W + iw) * C;
            float *restrict a = gw + (size_t)(kh * K + kw) * C;
            for (int c = c0; c < c1; c++) a[c] += g[c] * xp[c];
          }
        }
      }
}

/* The blocked version: 16 channels at a time (one AVX-512 register, two AVX2 ones), all K*K
   taps accumulated in registers while one pass runs over the output positions, reading the
   input from a zero-padded copy of the image's 16 channels, so no tap needs a bounds check.
   The plain loop above keeps its K*K accumulators in memory and re-reads them for every
   position. */
#define CB 16
typedef float v16 __attribute__((vector_size(CB * sizeof(float))));
typedef float v16u __attribute__((vector_size(CB * sizeof(float)), aligned(sizeof(float))));

static inline __attribute__((always_inline)) void dw_tile(const float *restrict pad, int Wp,
                                                          const float *restrict g, int Ho, int Wo, int C,
                                                          int s, float *restrict out, const int K) {
  v16 acc[K * K];
  for (int t = 0; t < K * K; t++) acc[t] = (v16){0};
  for (int oh = 0; oh < Ho; oh++)
    for (int ow = 0; ow < Wo; ow++) {
      v16 gv = *(const v16u *)(g + ((size_t)oh * Wo + ow) * C);
      const float *xb = pad + ((size_t)oh * s * Wp + (size_t)ow * s) * CB;
#pragma GCC unroll 7
      for (int kh = 0; kh < K; kh++)
#pragma GCC unroll 7
        for (int kw = 0; kw < K; kw++) acc[kh * K + kw] += gv * *(const v16 *)(xb + ((size_t)kh * Wp + kw) * CB);
    }
  for (int t = 0; t < K * K; t++) *(v16u *)(out + (size_t)t * C) += acc[t];
}

/* K is 3 or 5 (dw_job_run sends every other kernel size to the plain loop). */
static void dw_weight_grad_blocked(const float *restrict x, const float *restrict gy, float *restrict gw,
                                   float *restrict pad, int H, int W, int C, int Ho, int Wo, int K, int s,
                                   int p, int n0, int n1, int blocks) {
  int Wp = W + 2 * p;
  for (int n = n0; n < n1; n++)
    for (int b = 0; b < blocks; b++) {
      int cb = b * CB;
      for (int ih = 0; ih < H; ih++) /* the border of `pad` stays zero */
        for (int iw = 0; iw < W; iw++)
          memcpy(pad + ((size_t)(ih + p) * Wp + iw + p) * CB, x + (((size_t)n * H + ih) * W + iw) * C + cb,
                 CB * sizeof(float));
      const float *g = gy + (size_t)n * Ho * Wo * C + cb;
      if (K == 3) /* constant K: the taps unroll and the accumulators live in registers */
        dw_tile(pad, Wp, g, Ho, Wo, C, s, gw + cb, 3);
      else
        dw_tile(pad, Wp, g, Ho, Wo, C, s, gw + cb, 5);
    }
}

typedef struct {
  const float *x, *gy;
  float *gw;
  int H, W, C, Ho, Wo, K, s, p, n0, n1;
} dw_job;

static void *dw_job_run(void *arg) {
  dw_job *j = (dw_job *)arg;
  int blocks = (j->K == 3 || j->K == 5) ? j->C / CB : 0; /* register tiles for 3x3 and 5x5 */
  int Hp = j->H + 2 * j->p, Wp = j->W + 2 * j->p;
  float *pad = NULL;
  if (blocks > 0) {
    size_t bytes = ((size_t)Hp * Wp * CB * sizeof(float) + 63) / 64 * 64;
    pad = aligned_alloc(64, bytes);
    if (pad == NULL) {
      blocks = 0; /* no scratch: the plain loop does all channels */
    } else {
      memset(pad, 0, bytes);
    }
  }
  if (blocks > 0)
    dw_weight_grad_blocked(j->x, j->gy, j->gw, pad, j->H, j->W, j->C, j->Ho, j->Wo, j->K, j->s, j->p, j->n0,
                           j->n1, blocks);
  if (blocks * CB < j->C)
    dw_weight_grad_plain(j->x, j->gy, j->gw, j->H, j->W, j->C, j->Ho, j->Wo, j->K, j->s, j->p, j->n0, j->n1,
                         blocks * CB, j->C);
  free(pad);
  return NULL;
}

/* The depthwise weight gradient over all N images on `threads` threads: thread t sums images
   [N t / T, N (t+1) / T) into its own gw + t * K*K*C (zeroed by the caller); the caller adds
   the partial sums in a fixed order, so the result depends on the thread count only. Returns
   the number of threads used. */
int dw_weight_grad_threads(const float *x, const float *gy, float *gw, int N, int H, int W, int C,
                           int Ho, int Wo, int K, int s, int p, int threads) {
  enum { MAX_THREADS = 64 };
  dw_job jobs[MAX_THREADS];
  pthread_t ids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if (threads > N) threads = N > 0 ? N : 1;
  for (int t = 0; t < threads; t++) {
    dw_job j = {x, gy, gw + (size_t)t * K * K * C, H, W, C, Ho, Wo, K, s, p,
                (int)((long)N * t / threads), (int)((long)N * (t + 1) / threads)};
    jobs[t] = j;
  }
  for (int t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], NULL, dw_job_run, &jobs[t]) == 0;
  dw_job_run(&jobs[0]);
  for (int t = 1; t < threads; t++) {
    if (started[t])
      pthread_join(ids[t], NULL);
    else
      dw_job_run(&jobs[t]); /* no thread to be had: do its share here */
  }
  return threads;
}
