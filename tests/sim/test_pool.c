#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "pool.h"

typedef struct sum_job {
  fedc_pool_job job;
  uint64_t n;
  uint64_t result;
  unsigned slot;
} sum_job;

/* Sums 1..n slowly enough that workers overlap. */
static void run_sum(void *arg, unsigned slot)
{
  sum_job *s = arg;
  volatile uint64_t total = 0;

  for (uint64_t i = 1; i <= s->n; i++)
    total += i;
  s->result = total;
  s->slot = slot;
}

static void run_jobs(unsigned workers)
{
  enum { JOBS = 64 };
  fedc_pool *pool = NULL;
  sum_job jobs[JOBS];

  ck_assert_int_eq(fedc_pool_new(workers, &pool), 0);
  ck_assert_uint_eq(fedc_pool_slots(pool), workers + 1);
  for (int i = 0; i < JOBS; i++) {
    jobs[i].n = 1000 + 5000u * (uint64_t)i;
    jobs[i].slot = 1000;
    fedc_pool_submit(pool, &jobs[i].job, run_sum, &jobs[i]);
  }

  /* Wait in reverse order, the opposite of the order they run in: the
   * last job is still queued, so the waiting thread runs it itself. */
  for (int i = JOBS - 1; i >= 0; i--) {
    fedc_pool_wait(pool, &jobs[i].job);
    ck_assert_uint_eq(jobs[i].result, jobs[i].n * (jobs[i].n + 1) / 2);
    ck_assert_uint_le(jobs[i].slot, workers);
  }
  ck_assert_uint_eq(jobs[JOBS - 1].slot, workers);
  fedc_pool_free(&pool);
  ck_assert_ptr_null(pool);
}

START_TEST(pool_runs_every_job_with_workers)
{
  run_jobs(3);
}
END_TEST

START_TEST(pool_without_workers_runs_inline)
{
  run_jobs(0);
}
END_TEST

START_TEST(pool_free_accepts_null)
{
  fedc_pool *pool = NULL;

  fedc_pool_free(&pool);
  fedc_pool_free(NULL);
  ck_assert_uint_lt(fedc_pool_default_workers(),
                    (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
}
END_TEST

int main(void)
{
  Suite *s = suite_create("sim_pool");
  TCase *tc = tcase_create("core");
  SRunner *sr;
  int failed;

  tcase_add_test(tc, pool_runs_every_job_with_workers);
  tcase_add_test(tc, pool_without_workers_runs_inline);
  tcase_add_test(tc, pool_free_accepts_null);
  suite_add_tcase(s, tc);
  sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
