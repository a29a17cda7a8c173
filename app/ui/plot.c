/* plot.c — the sample ring buffer and the plot widget (see plot.h). */
#include "plot.h"

#include <math.h>

/* ---- the series ---------------------------------------------------------- */

struct _BlnPlotSeries
{
  double *v;        /* capacity slots */
  guint capacity;
  guint start;      /* slot of the oldest sample */
  guint len;
};

BlnPlotSeries *
bln_plot_series_new (guint capacity)
{
  BlnPlotSeries *s = g_new0 (BlnPlotSeries, 1);

  s->capacity = MAX (capacity, 2);
  s->v = g_new (double, s->capacity);
  return s;
}

void
bln_plot_series_free (BlnPlotSeries *s)
{
  if (!s)
    return;
  g_free (s->v);
  g_free (s);
}

void
bln_plot_series_push (BlnPlotSeries *s, double value)
{
  g_return_if_fail (s != NULL);
  if (!isfinite (value))
    value = NAN;
  if (s->len < s->capacity)
    s->v[(s->start + s->len++) % s->capacity] = value;
  else
    {
      s->v[s->start] = value;   /* overwrite the oldest: it becomes the newest */
      s->start = (s->start + 1) % s->capacity;
    }
}

void
bln_plot_series_clear (BlnPlotSeries *s)
{
  g_return_if_fail (s != NULL);
  s->start = 0;
  s->len = 0;
}

guint
bln_plot_series_capacity (const BlnPlotSeries *s)
{
  return s->capacity;
}

guint
bln_plot_series_length (const BlnPlotSeries *s)
{
  return s->len;
}

double
bln_plot_series_get (const BlnPlotSeries *s, guint i)
{
  if (!s || i >= s->len)
    return NAN;
  return s->v[(s->start + i) % s->capacity];
}

double
bln_plot_series_last (const BlnPlotSeries *s)
{
  for (guint i = s->len; i > 0; i--)
    {
      double v = bln_plot_series_get (s, i - 1);
      if (!isnan (v))
        return v;
    }
  return NAN;
}

double
bln_plot_series_max (const BlnPlotSeries *s)
{
  double m = 0;
  gboolean any = FALSE;

  for (guint i = 0; i < s->len; i++)
    {
      double v = bln_plot_series_get (s, i);
      if (!isnan (v) && (!any || v > m))
        m = v, any = TRUE;
    }
  return m;
}

double
bln_plot_nice_ceiling (double max, double least)
{
  static const double steps[] = { 1, 2, 5, 10 };
  double p;

  if (!(least > 0) || !isfinite (least))
    least = 1;
  if (!isfinite (max) || max <= least)
    return least;
  p = pow (10, floor (log10 (max)));
  for (guint i = 0; i < G_N_ELEMENTS (steps); i++)
    if (steps[i] * p >= max * (1 - 1e-12))
      return steps[i] * p;
  return 10 * p;
}

gboolean
bln_plot_series_point (const BlnPlotSeries *s, guint i, double width, double height, double top,
                       double *x, double *y)
{
  double v = bln_plot_series_get (s, i);

  if (isnan (v) || !(top > 0))
    return FALSE;
  *x = width - (double) (s->len - 1 - i) * width / (s->capacity - 1);
  *y = height - CLAMP (v, 0, top) / top * height;
  return TRUE;
}

/* ---- the widget ---------------------------------------------------------- */

struct _BlnPlot
{
  GtkDrawingArea parent_instance;

  BlnPlotSeries *series;   /* owned */
  char *title;
  char *unit;
  char *message;           /* NULL: draw the curve */
  char *value_text;
  double least;            /* smallest top of a growing scale */
  double fixed_top;        /* 0: follow the data */
};

G_DEFINE_FINAL_TYPE (BlnPlot, bln_plot, GTK_TYPE_DRAWING_AREA)

double
bln_plot_get_top (BlnPlot *self)
{
  g_return_val_if_fail (BLN_IS_PLOT (self), 1);
  if (self->fixed_top > 0)
    return self->fixed_top;
  return bln_plot_nice_ceiling (bln_plot_series_max (self->series), self->least);
}

/* A number with as many decimals as its size deserves. */
static char *
format_value (double v, const char *unit)
{
  const char *sep = unit && *unit && *unit != '%' ? " " : "";

  if (isnan (v))
    return g_strdup ("—");
  if (fabs (v) >= 100 || v == floor (v))
    return g_strdup_printf ("%.0f%s%s", v, sep, unit ? unit : "");
  if (fabs (v) >= 10)
    return g_strdup_printf ("%.1f%s%s", v, sep, unit ? unit : "");
  return g_strdup_printf ("%.2f%s%s", v, sep, unit ? unit : "");
}

static void
update_value (BlnPlot *self)
{
  g_autofree char *desc = NULL;

  g_free (self->value_text);
  self->value_text = self->message ? g_strdup ("—")
                                   : format_value (bln_plot_series_last (self->series),
                                                   self->unit);
  desc = g_strdup_printf ("%s: %s", self->title,
                          self->message ? self->message : self->value_text);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self), GTK_ACCESSIBLE_PROPERTY_DESCRIPTION,
                                  desc, -1);
}

static void
set_rgba (cairo_t *cr, const GdkRGBA *c, double alpha)
{
  cairo_set_source_rgba (cr, c->red, c->green, c->blue, c->alpha * alpha);
}

/* Draws @text at (@x, @y), its right edge there when @right; wrapped to
 * @wrap pixels when > 0. */
static void
draw_text (BlnPlot *self, cairo_t *cr, const char *text, double x, double y, gboolean right,
           gboolean bold, int wrap)
{
  PangoLayout *layout = gtk_widget_create_pango_layout (GTK_WIDGET (self), NULL);
  g_autofree char *escaped = g_markup_escape_text (text, -1);
  g_autofree char *markup = bold ? g_strdup_printf ("<b>%s</b>", escaped)
                                 : g_strdup_printf ("<small>%s</small>", escaped);
  int w, h;

  pango_layout_set_markup (layout, markup, -1);
  if (wrap > 0)
    {
      pango_layout_set_width (layout, wrap * PANGO_SCALE);
      pango_layout_set_wrap (layout, PANGO_WRAP_WORD_CHAR);
      pango_layout_set_alignment (layout, PANGO_ALIGN_CENTER);
    }
  pango_layout_get_pixel_size (layout, &w, &h);
  cairo_move_to (cr, right ? x - w : x, y);
  pango_cairo_show_layout (cr, layout);
  g_object_unref (layout);
}

static void
draw (GtkDrawingArea *area, cairo_t *cr, int width, int height, gpointer user_data)
{
  BlnPlot *self = BLN_PLOT (area);
  GdkRGBA fg, accent = { 0.21, 0.52, 0.89, 1 };   /* the GNOME blue */
  const double pad = 8, head = 26;
  double top = bln_plot_get_top (self);
  double pw = width - 2 * pad, ph = height - head - pad;
  g_autofree char *top_text = format_value (top, self->unit);
  gboolean started = FALSE;
  double x, y;

  G_GNUC_BEGIN_IGNORE_DEPRECATIONS
  gtk_style_context_get_color (gtk_widget_get_style_context (GTK_WIDGET (self)), &fg);
  G_GNUC_END_IGNORE_DEPRECATIONS

  set_rgba (cr, &fg, 1);
  draw_text (self, cr, self->title, pad, 4, FALSE, TRUE, 0);
  if (!self->message)
    draw_text (self, cr, self->value_text ? self->value_text : "—", width - pad, 4, TRUE, TRUE,
               0);
  if (pw < 4 || ph < 4)
    return;

  /* frame, and a half-way line under a curve */
  set_rgba (cr, &fg, 0.15);
  cairo_set_line_width (cr, 1);
  cairo_rectangle (cr, pad + 0.5, head + 0.5, pw - 1, ph - 1);
  cairo_stroke (cr);
  if (self->message)
    {
      set_rgba (cr, &fg, 0.6);
      draw_text (self, cr, self->message, pad + 8, head + 8, FALSE, FALSE, (int) pw - 16);
      return;
    }
  cairo_move_to (cr, pad, head + floor (ph / 2) + 0.5);
  cairo_line_to (cr, pad + pw, head + floor (ph / 2) + 0.5);
  cairo_stroke (cr);
  set_rgba (cr, &fg, 0.55);
  draw_text (self, cr, top_text, pad + pw - 4, head + 2, TRUE, FALSE, 0);

  /* the curve; a sample without a value breaks it */
  set_rgba (cr, &accent, 1);
  cairo_set_line_width (cr, 1.5);
  cairo_set_line_join (cr, CAIRO_LINE_JOIN_ROUND);
  for (guint i = 0; i < bln_plot_series_length (self->series); i++)
    {
      if (!bln_plot_series_point (self->series, i, pw, ph, top, &x, &y))
        {
          started = FALSE;
          continue;
        }
      if (!started)
        cairo_move_to (cr, pad + x, head + y);
      else
        cairo_line_to (cr, pad + x, head + y);
      started = TRUE;
    }
  cairo_stroke (cr);

  /* a sample alone between gaps makes no line: mark it with a dot */
  for (guint i = 0; i < bln_plot_series_length (self->series); i++)
    if (bln_plot_series_point (self->series, i, pw, ph, top, &x, &y) &&
        isnan (bln_plot_series_get (self->series, i - 1)) &&
        isnan (bln_plot_series_get (self->series, i + 1)))
      {
        cairo_arc (cr, pad + x, head + y, 2.5, 0, 2 * G_PI);
        cairo_fill (cr);
      }
}

void
bln_plot_push (BlnPlot *self, double value)
{
  g_return_if_fail (BLN_IS_PLOT (self));
  bln_plot_series_push (self->series, value);
  update_value (self);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
bln_plot_set_fixed_top (BlnPlot *self, double top)
{
  g_return_if_fail (BLN_IS_PLOT (self));
  self->fixed_top = top > 0 ? top : 0;
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
bln_plot_set_message (BlnPlot *self, const char *message)
{
  g_return_if_fail (BLN_IS_PLOT (self));
  if (g_strcmp0 (message, self->message) == 0)
    return;
  g_free (self->message);
  self->message = g_strdup (message);
  update_value (self);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

const char *
bln_plot_get_message (BlnPlot *self)
{
  g_return_val_if_fail (BLN_IS_PLOT (self), NULL);
  return self->message;
}

BlnPlotSeries *
bln_plot_get_series (BlnPlot *self)
{
  g_return_val_if_fail (BLN_IS_PLOT (self), NULL);
  return self->series;
}

const char *
bln_plot_get_value_text (BlnPlot *self)
{
  g_return_val_if_fail (BLN_IS_PLOT (self), NULL);
  return self->value_text;
}

static void
bln_plot_finalize (GObject *object)
{
  BlnPlot *self = BLN_PLOT (object);

  bln_plot_series_free (self->series);
  g_free (self->title);
  g_free (self->unit);
  g_free (self->message);
  g_free (self->value_text);
  G_OBJECT_CLASS (bln_plot_parent_class)->finalize (object);
}

static void
bln_plot_class_init (BlnPlotClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = bln_plot_finalize;
  gtk_widget_class_set_css_name (GTK_WIDGET_CLASS (klass), "plot");
  gtk_widget_class_set_accessible_role (GTK_WIDGET_CLASS (klass), GTK_ACCESSIBLE_ROLE_IMG);
}

static void
bln_plot_init (BlnPlot *self)
{
  gtk_drawing_area_set_draw_func (GTK_DRAWING_AREA (self), draw, NULL, NULL);
  gtk_drawing_area_set_content_height (GTK_DRAWING_AREA (self), 120);
  gtk_drawing_area_set_content_width (GTK_DRAWING_AREA (self), 200);
  gtk_widget_set_hexpand (GTK_WIDGET (self), TRUE);
}

BlnPlot *
bln_plot_new (const char *title, const char *unit, guint capacity, double floor_top)
{
  BlnPlot *self = g_object_new (BLN_TYPE_PLOT, NULL);

  self->series = bln_plot_series_new (capacity);
  self->title = g_strdup (title);
  self->unit = g_strdup (unit ? unit : "");
  self->least = floor_top > 0 ? floor_top : 1;
  gtk_accessible_update_property (GTK_ACCESSIBLE (self), GTK_ACCESSIBLE_PROPERTY_LABEL, title,
                                  -1);
  update_value (self);
  return self;
}
