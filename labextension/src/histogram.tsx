/** A counts histogram as SVG: one bar per outcome, keys in Qiskit's bit order. */
import * as React from 'react';
import { TranslationBundle } from '@jupyterlab/translation';

/** A count short enough to sit above a bar: 999, 12.3k, 4.00M (the tooltip has it in full). */
export function compactCount(count: number): string {
  const units: [number, string][] = [
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k']
  ];
  if (count >= 10000) {
    for (const [size, unit] of units) {
      if (count >= size) {
        return `${(count / size).toPrecision(3)}${unit}`;
      }
    }
  }
  return String(count);
}

export interface IHistogramProps {
  counts: Record<string, number>;
  trans: TranslationBundle;
  /** At most this many bars (the most frequent outcomes); the rest are summed. */
  maxBars?: number;
  title?: string;
}

export function Histogram(props: IHistogramProps): JSX.Element {
  const { counts, trans } = props;
  const maxBars = props.maxBars ?? 32;
  const entries = Object.entries(counts).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let shown = entries;
  let rest = 0;
  if (entries.length > maxBars) {
    const top = new Set(
      entries
        .slice()
        .sort((a, b) => b[1] - a[1])
        .slice(0, maxBars)
        .map(([key]) => key)
    );
    shown = entries.filter(([key]) => top.has(key));
    rest = entries.filter(([key]) => !top.has(key)).reduce((sum, [, n]) => sum + n, 0);
  }
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const max = Math.max(1, ...shown.map(([, n]) => n));
  const barWidth = 28;
  const gap = 8;
  const chartHeight = 120;
  const labelHeight = 40;
  const width = Math.max(120, shown.length * (barWidth + gap) + gap);
  const label = props.title ?? trans.__('Counts of %1 shots', total);
  return (
    <figure className="jp-qmlops-HistogramFigure">
      <svg
        className="jp-qmlops-Histogram"
        role="img"
        aria-label={label}
        width={width}
        height={chartHeight + labelHeight + 16}
        viewBox={`0 0 ${width} ${chartHeight + labelHeight + 16}`}
      >
        <title>{label}</title>
        {shown.map(([outcome, count], i) => {
          const height = Math.max(1, (count / max) * chartHeight);
          const x = gap + i * (barWidth + gap);
          const y = 14 + chartHeight - height;
          const share = total ? (100 * count) / total : 0;
          return (
            <g key={outcome}>
              <rect
                className="jp-qmlops-Histogram-bar"
                data-outcome={outcome}
                data-count={count}
                x={x}
                y={y}
                width={barWidth}
                height={height}
              >
                <title>{`${outcome}: ${count} (${share.toFixed(1)}%)`}</title>
              </rect>
              <text
                className="jp-qmlops-Histogram-value"
                x={x + barWidth / 2}
                y={y - 3}
                textAnchor="middle"
              >
                {compactCount(count)}
              </text>
              <text
                className="jp-qmlops-Histogram-label"
                x={x + barWidth / 2}
                y={14 + chartHeight + 12}
                textAnchor="end"
                transform={`rotate(-45 ${x + barWidth / 2} ${14 + chartHeight + 12})`}
              >
                {outcome}
              </text>
            </g>
          );
        })}
      </svg>
      {rest > 0 ? (
        <figcaption className="jp-qmlops-Muted">
          {trans.__('%1 more outcomes (%2 shots) not shown', entries.length - shown.length, rest)}
        </figcaption>
      ) : null}
    </figure>
  );
}
