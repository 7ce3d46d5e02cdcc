// The type the dashboard (../shardns.json) must have: @grafana/schema's `Dashboard`, with each
// panel's options and custom field config checked against its panel plugin's types from
// @grafana/schema too, and every query a Prometheus query.
//
// JSON spells an enum by its value ("absolute"), where TypeScript wants the enum member
// (ThresholdsMode.Absolute): `Json<T>` turns every string enum inside T into the union of its
// values' literal types (a template literal type, `${E}`), so the JSON text type-checks as is.
// Numeric enums (VariableRefresh, VariableHide, ...) already accept their number literals.

import type {
  Dashboard,
  DataQuery,
  DataSourceRef,
  FieldConfigSource,
  Panel,
  RowPanel,
} from '@grafana/schema';
import type * as heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/** `T` as JSON spells it: string enums become the literal types of their values. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? Json<U>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

/** Every field optional, at every depth (Grafana fills a plugin's defaults on load); the
 * types of the fields that are there are still checked, and unknown fields are errors. */
export type DeepPartial<T> = T extends readonly (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/** A query of Grafana's Prometheus data source (its type lives in @grafana/prometheus, not in
 * @grafana/schema): the fields this dashboard uses. */
export interface PrometheusQuery extends DataQuery {
  datasource: DataSourceRef;
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  editorMode?: 'code' | 'builder';
  interval?: string;
}

/** A panel of plugin `Type`, with that plugin's options and custom field config. */
type PluginPanel<Type extends string, Options, Custom> = Omit<
  Json<Panel>,
  'type' | 'options' | 'fieldConfig' | 'targets'
> & {
  type: Type;
  options: Json<DeepPartial<Options>>;
  fieldConfig: Json<FieldConfigSource<DeepPartial<Custom>>>;
  targets: Json<PrometheusQuery>[];
};

export type ShardnsPanel =
  | PluginPanel<'timeseries', timeseries.Options, timeseries.FieldConfig>
  | PluginPanel<'heatmap', heatmap.Options, heatmap.FieldConfig>
  | PluginPanel<'stat', stat.Options, Record<string, never>>
  | PluginPanel<'table', table.Options, table.FieldConfig>
  | Json<RowPanel>;

export type ShardnsDashboard = Omit<Json<Dashboard>, 'panels'> & {
  panels: ShardnsPanel[];
};

/** The plain schema type, which the generated file also assigns the dashboard to. */
export type SchemaDashboard = Json<Dashboard>;
