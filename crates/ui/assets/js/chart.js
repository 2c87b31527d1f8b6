// A uPlot line chart of one series, resized with its container (`height` in px, 200 unless
// told). `data-points` on the wrapper tells how many points are drawn (for people reading the
// DOM, and for the UI tests). The series themselves come from telemetry.js's useSeries.
import { html, useEffect, useRef } from './html.js';
import uPlot from '/vendor/uPlot.esm.js';

export function Chart({ name, ts, values, height = 200 }) {
  const box = useRef(null);
  const plot = useRef(null);
  const tall = useRef(height);
  tall.current = height;

  useEffect(() => {
    const el = box.current;
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      scales: { x: { time: true } },
      series: [{}, { label: name, stroke: '#1d4e89', width: 2, points: { show: false } }],
      legend: { show: true },
    };
    plot.current = new uPlot(opts, [ts.map((t) => t / 1000), values], el);
    const ro = new ResizeObserver(() => plot.current.setSize({ width: Math.max(200, el.clientWidth), height: tall.current }));
    ro.observe(el);
    return () => { ro.disconnect(); plot.current.destroy(); plot.current = null; };
  }, [name]);

  useEffect(() => {
    plot.current?.setSize({ width: Math.max(200, box.current.clientWidth), height });
  }, [height]);

  useEffect(() => {
    plot.current?.setData([ts.map((t) => t / 1000), values]);
  }, [ts, values]);

  return html`<figure class="chart" data-key=${name} data-points=${ts.length}>
    <h3>${name}</h3>
    <div class="plot" style=${`min-height:${height}px`} ref=${box} role="img" aria-label=${`${name}: ${ts.length} points`}></div>
  </figure>`;
}
