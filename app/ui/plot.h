/* plot.h — a small line plot of values sampled over time.
 *
 * BlnPlotSeries is the data model: a ring buffer of the last @capacity
 * samples (NAN marks a sample with no value, drawn as a gap) and the scaling
 * that maps them into a rectangle, newest sample at the right edge. It uses
 * no GTK and is tested on its own.
 *
 * BlnPlot is the widget: a GtkDrawingArea that draws one series with its
 * title, the newest value with its unit, and the top of its scale; or, when a
 * message is set ("No NVIDIA GPU"), only the title and the message. Its
 * accessible description follows the newest value.
 */
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

typedef struct _BlnPlotSeries BlnPlotSeries;

/* bln_plot_series_new: an empty series keeping the last @capacity (>= 2)
 * samples. Free with bln_plot_series_free(). */
BlnPlotSeries *bln_plot_series_new (guint capacity);
void bln_plot_series_free (BlnPlotSeries *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (BlnPlotSeries, bln_plot_series_free)

/* bln_plot_series_push: appends @value (NAN: no value), dropping the oldest
 * sample when full. Infinite values are stored as NAN. */
void bln_plot_series_push (BlnPlotSeries *s, double value);

/* bln_plot_series_clear: forgets every sample. */
void bln_plot_series_clear (BlnPlotSeries *s);

/* bln_plot_series_capacity / _length: samples kept at most / held now. */
guint bln_plot_series_capacity (const BlnPlotSeries *s);
guint bln_plot_series_length (const BlnPlotSeries *s);

/* bln_plot_series_get: sample @i, 0 the oldest held; NAN when out of range. */
double bln_plot_series_get (const BlnPlotSeries *s, guint i);

/* bln_plot_series_last: the newest sample that has a value, NAN if none. */
double bln_plot_series_last (const BlnPlotSeries *s);

/* bln_plot_series_max: the largest value held, 0 when none (NANs ignored). */
double bln_plot_series_max (const BlnPlotSeries *s);

/* bln_plot_nice_ceiling: the top of a scale that shows @max: the smallest
 * number of the form 1, 2 or 5 times a power of ten that is >= @max, and at
 * least @floor (> 0). Returns @floor for a @max that is not positive or not
 * finite. */
double bln_plot_nice_ceiling (double max, double floor);

/* bln_plot_series_point:
 * Where sample @i goes in a @width × @height rectangle with the scale 0 ..
 * @top (> 0): the newest sample at x = @width, one sample step = @width /
 * (capacity - 1) to the left per older sample; y = @height at 0 and 0 at
 * @top, values outside the scale clamped to its edges. FALSE (and nothing
 * written) when @i is out of range or the sample has no value.
 */
gboolean bln_plot_series_point (const BlnPlotSeries *s, guint i, double width, double height,
                                double top, double *x, double *y);

#define BLN_TYPE_PLOT (bln_plot_get_type ())
G_DECLARE_FINAL_TYPE (BlnPlot, bln_plot, BLN, PLOT, GtkDrawingArea)

/* bln_plot_new: a plot titled @title (copied) whose values are in @unit
 * (copied, e.g. "tok/s"; may be ""), keeping @capacity samples. The scale
 * grows to fit the values, from at least @floor; with bln_plot_set_fixed_top()
 * it stays fixed (percentages). Floating reference. */
BlnPlot *bln_plot_new (const char *title, const char *unit, guint capacity, double floor);

/* bln_plot_push: appends a sample (NAN: none) and redraws. */
void bln_plot_push (BlnPlot *self, double value);

/* bln_plot_set_fixed_top: a fixed scale 0 .. @top; 0 lets it follow the data. */
void bln_plot_set_fixed_top (BlnPlot *self, double top);

/* bln_plot_set_message: shows @message (copied) instead of the curve, e.g.
 * why there is nothing to plot; NULL goes back to the curve. */
void bln_plot_set_message (BlnPlot *self, const char *message);
const char *bln_plot_get_message (BlnPlot *self);

/* bln_plot_get_series: the samples (owned by the plot). */
BlnPlotSeries *bln_plot_get_series (BlnPlot *self);

/* bln_plot_get_top: the top of the scale the next draw uses. */
double bln_plot_get_top (BlnPlot *self);

/* bln_plot_get_value_text: the newest value as shown, "12.5 tok/s", or "—"
 * when there is none or a message is shown (owned by the plot). */
const char *bln_plot_get_value_text (BlnPlot *self);

G_END_DECLS
