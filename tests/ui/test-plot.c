/* test-plot.c — the plot's data model: the sample ring buffer, its scaling
 * into a rectangle and the "nice" top of a scale. No display needed. */
#include <math.h>

#include "plot.h"

static void
test_ring (void)
{
  g_autoptr (BlnPlotSeries) s = bln_plot_series_new (5);

  g_assert_cmpuint (bln_plot_series_capacity (s), ==, 5);
  g_assert_cmpuint (bln_plot_series_length (s), ==, 0);
  g_assert_true (isnan (bln_plot_series_last (s)));
  g_assert_cmpfloat (bln_plot_series_max (s), ==, 0);
  g_assert_true (isnan (bln_plot_series_get (s, 0)));

  /* Filling past the capacity keeps the newest five, oldest first; every
   * wrap position of the buffer is visited. */
  for (int n = 1; n <= 13; n++)
    {
      guint len;
      bln_plot_series_push (s, n);
      len = MIN (n, 5);
      g_assert_cmpuint (bln_plot_series_length (s), ==, len);
      for (guint i = 0; i < len; i++)
        g_assert_cmpfloat (bln_plot_series_get (s, i), ==, n - len + 1 + i);
      g_assert_true (isnan (bln_plot_series_get (s, len)));
      g_assert_cmpfloat (bln_plot_series_last (s), ==, n);
      g_assert_cmpfloat (bln_plot_series_max (s), ==, n);
    }

  /* Gaps: NAN and infinities are kept as "no value". */
  bln_plot_series_push (s, NAN);
  bln_plot_series_push (s, INFINITY);
  g_assert_cmpuint (bln_plot_series_length (s), ==, 5);
  g_assert_true (isnan (bln_plot_series_get (s, 4)));
  g_assert_true (isnan (bln_plot_series_get (s, 3)));
  g_assert_cmpfloat (bln_plot_series_last (s), ==, 13);
  g_assert_cmpfloat (bln_plot_series_max (s), ==, 13);

  bln_plot_series_clear (s);
  g_assert_cmpuint (bln_plot_series_length (s), ==, 0);
  bln_plot_series_push (s, -2);
  g_assert_cmpfloat (bln_plot_series_max (s), ==, -2);
  g_assert_cmpfloat (bln_plot_series_get (s, 0), ==, -2);

  /* A capacity below two is raised to two (a line needs two points). */
  {
    g_autoptr (BlnPlotSeries) tiny = bln_plot_series_new (0);
    g_assert_cmpuint (bln_plot_series_capacity (tiny), ==, 2);
  }
}

static void
test_point (void)
{
  g_autoptr (BlnPlotSeries) s = bln_plot_series_new (5);
  double x = -1, y = -1;

  /* Values 0, 5, 10, 20 (above the top), NAN on a 0..10 scale in 100 × 50. */
  bln_plot_series_push (s, 0);
  bln_plot_series_push (s, 5);
  bln_plot_series_push (s, 10);
  bln_plot_series_push (s, 20);
  bln_plot_series_push (s, -3);
  g_assert_true (bln_plot_series_point (s, 4, 100, 50, 10, &x, &y));
  g_assert_cmpfloat (x, ==, 100);      /* newest at the right edge */
  g_assert_cmpfloat (y, ==, 50);       /* below 0: clamped to the bottom */
  g_assert_true (bln_plot_series_point (s, 3, 100, 50, 10, &x, &y));
  g_assert_cmpfloat (x, ==, 75);
  g_assert_cmpfloat (y, ==, 0);        /* above the top: clamped */
  g_assert_true (bln_plot_series_point (s, 2, 100, 50, 10, &x, &y));
  g_assert_cmpfloat (x, ==, 50);
  g_assert_cmpfloat (y, ==, 0);
  g_assert_true (bln_plot_series_point (s, 1, 100, 50, 10, &x, &y));
  g_assert_cmpfloat (x, ==, 25);
  g_assert_cmpfloat (y, ==, 25);
  g_assert_true (bln_plot_series_point (s, 0, 100, 50, 10, &x, &y));
  g_assert_cmpfloat (x, ==, 0);
  g_assert_cmpfloat (y, ==, 50);
  g_assert_false (bln_plot_series_point (s, 5, 100, 50, 10, &x, &y));
  g_assert_false (bln_plot_series_point (s, 0, 100, 50, 0, &x, &y));

  /* A partly filled series is still anchored at the right edge. */
  bln_plot_series_clear (s);
  bln_plot_series_push (s, 2);
  bln_plot_series_push (s, NAN);
  g_assert_false (bln_plot_series_point (s, 1, 100, 50, 10, &x, &y));
  g_assert_true (bln_plot_series_point (s, 0, 100, 50, 10, &x, &y));
  g_assert_cmpfloat (x, ==, 75);
  g_assert_cmpfloat (y, ==, 40);
}

/* The mantissa of a positive number: r / 10^floor(log10 r), in [1, 10). */
static double
mantissa (double r)
{
  return r / pow (10, floor (log10 (r) + 1e-9));
}

static void
test_nice (void)
{
  GRand *rand = g_rand_new_with_seed (7);

  g_assert_cmpfloat (bln_plot_nice_ceiling (0, 5), ==, 5);
  g_assert_cmpfloat (bln_plot_nice_ceiling (-4, 5), ==, 5);
  g_assert_cmpfloat (bln_plot_nice_ceiling (NAN, 5), ==, 5);
  g_assert_cmpfloat (bln_plot_nice_ceiling (INFINITY, 5), ==, 5);
  g_assert_cmpfloat (bln_plot_nice_ceiling (3, 0), ==, 5);   /* a bad floor becomes 1 */
  g_assert_cmpfloat (bln_plot_nice_ceiling (4, 10), ==, 10);

  /* For values over many magnitudes: the top covers the value, is 1, 2 or 5
   * times a power of ten, and the next smaller such number would not. */
  for (int i = 0; i < 10000; i++)
    {
      double v = pow (10, g_rand_double_range (rand, -3, 9));
      double r = bln_plot_nice_ceiling (v, 1e-6);
      double m = mantissa (r);
      double p = r / m;
      double smaller = fabs (m - 1) < 1e-9 ? 5 * p / 10 : fabs (m - 2) < 1e-9 ? p : 2 * p;

      g_assert_cmpfloat (r, >=, v * (1 - 1e-12));
      g_assert_true (fabs (m - 1) < 1e-9 || fabs (m - 2) < 1e-9 || fabs (m - 5) < 1e-9);
      g_assert_cmpfloat (smaller, <, v);
    }
  /* Exact nice values map to themselves. */
  g_assert_cmpfloat (bln_plot_nice_ceiling (1000, 1), ==, 1000);
  g_assert_cmpfloat (bln_plot_nice_ceiling (0.2, 0.01), ==, 0.2);
  g_rand_free (rand);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/Baleen/Plot/ring-buffer", test_ring);
  g_test_add_func ("/Baleen/Plot/scaling", test_point);
  g_test_add_func ("/Baleen/Plot/nice-ceiling", test_nice);
  return g_test_run ();
}
