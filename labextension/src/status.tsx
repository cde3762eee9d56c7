/** The status-bar item: how many jobs are running and how much of the budget is used. */
import * as React from 'react';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { TranslationBundle } from '@jupyterlab/translation';
import { IQmlopsModel } from './tokens';

export class QmlopsStatusItem extends ReactWidget {
  constructor(
    private readonly _model: IQmlopsModel,
    private readonly _trans: TranslationBundle,
    private readonly _onClick: () => void
  ) {
    super();
    this.addClass('jp-qmlops-StatusItem');
    this.addClass('jp-mod-highlighted');
    this.node.title = _trans.__('Quantum jobs: open the qmlops sidebar');
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this._model.changed}>
        {() => {
          const trans = this._trans;
          const running = this._model.runningCount;
          const use = this._model.budgetUse;
          const parts = [trans._n('%1 running', '%1 running', running)];
          if (use !== null) {
            parts.push(trans.__('%1% budget', Math.round(use * 100)));
          }
          return (
            <span
              className="jp-qmlops-StatusItem-text"
              role="button"
              tabIndex={0}
              data-running={running}
              data-budget-level={
                use === null ? 'none' : use >= 1 ? 'over' : use >= 0.8 ? 'high' : 'ok'
              }
              onClick={this._onClick}
              onKeyDown={event => {
                if (event.key === 'Enter' || event.key === ' ') {
                  event.preventDefault();
                  this._onClick();
                }
              }}
            >
              ⚛ {parts.join(' · ')}
            </span>
          );
        }}
      </UseSignal>
    );
  }
}
