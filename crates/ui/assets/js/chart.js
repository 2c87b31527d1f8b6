// A uPlot line chart of one series, resized with its container. `data-points` on the wrapper
// tells how many points are drawn (for people reading the DOM, and for the UI tests).
import { html, useEffect, useRef } from './html.js';
import uPlot from '/vendor/uPlot.esm.js';

export function Chart({ name, ts, values }) {
  const box = useRef(null);
  const plot = useRef(null);

  useEffect(() => {
    const el = box.current;
    const opts = {
      width: Math.max(200, el.clientWidth),
      height: 200,
      scales: { x: { time: true } },
      series: [{}, { label: name, stroke: '#1d4e89', width: 2, points: { show: false } }],
      legend: { show: true },
    };
    plot.current = new uPlot(opts, [ts.map((t) => t / 1000), values], el);
    const ro = new ResizeObserver(() => plot.current.setSize({ width: Math.max(200, el.clientWidth), height: 200 }));
    ro.observe(el);
    return () => { ro.disconnect(); plot.current.destroy(); plot.current = null; };
  }, [name]);

  useEffect(() => {
    plot.current?.setData([ts.map((t) => t / 1000), values]);
  }, [ts, values]);

  return html`<figure class="chart" data-key=${name} data-points=${ts.length}>
    <h3>${name}</h3>
    <div class="plot" ref=${box} role="img" aria-label=${`${name}: ${ts.length} points`}></div>
  </figure>`;
}
