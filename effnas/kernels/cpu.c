/* effnas's CPU kernels: plain C, compiled on first use by effnas/kernels/__init__.py.

   Layout everywhere: activations NHWC float32 (the memory of a channels-last NCHW tensor),
   depthwise weights as (K*K, C). The innermost loop runs over channels, contiguous in memory,
   and vectorises (-O3 -march=native); batches are split across POSIX threads by image.
*/
#include <pthread.h>
#include <stddef.h>

/* Depthwise convolution's weight gradient: gw (K*K, C) += sum over images [n0, n1) and output
   positions of gy * the input under each tap. x (N,H,W,C), gy (N,Ho,Wo,C); the caller zeroes gw. */
void dw_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                    int H, int W, int C, int Ho, int Wo, int K, int s, int p, int n0, int n1) {
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
            for (int c = 0; c < C; c++) a[c] += g[c] * xp[c];
          }
        }
      }
}


/* dw_weight_grad over all N images on `threads` threads: thread t sums images
   [N t / T, N (t+1) / T) into its own gw + t * K*K*C (zeroed by the caller); the caller adds
   the partial sums in a fixed order, so the result depends on the thread count only. */
typedef struct {
  const float *x, *gy;
  float *gw;
  int H, W, C, Ho, Wo, K, s, p, n0, n1;
} dw_job;

static void *dw_job_run(void *arg) {
  dw_job *j = (dw_job *)arg;
  dw_weight_grad(j->x, j->gy, j->gw, j->H, j->W, j->C, j->Ho, j->Wo, j->K, j->s, j->p, j->n0, j->n1);
  return NULL;
}

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
