"""Snapshot -> what the screens show: sorted, filtered, formatted rows, header chunks, drain notes.

Pure and free of Textual so that it runs off the UI thread (the feed's builder thread) and in tests.
Cells carry display strings; sorting uses the raw numbers, never the strings.

One module per thing shown, and the pieces they share:
  services, dests, events, director, connections, compare (several directors), header  -- the views
  weights      what a weight edit would do (the confirmation dialog)
  table        columns, rows, sorting, which columns fit a width
  columns      per-service sums of the dests' columns (no row per dest)
  health       health checks: a dest's state, healthy/total per service
  history      the sparklines' ring buffers
  labels       how keys, addresses and flags are written
  managers     which services keepalived or ldirectord manage, and how they undo an edit
  settings     what the user chose (sorts, filters, units)
  tones        what a piece of text means, for the stylesheet
The screens import this package as `vm` and use the names below.
"""

from lvstop.tui.viewmodel.compare import SIDE_SERVICES, Brief, brief, side_by_side
from lvstop.tui.viewmodel.connections import (
    CONN_CLIENT_COLUMNS,
    CONN_DEST_COLUMNS,
    CONN_ENTRY_COLUMNS,
    CONN_STATE_COLUMNS,
    ConnQuery,
    ConnViews,
    conn_query_text,
    conn_views,
    parse_conn_filter,
)
from lvstop.tui.viewmodel.dests import (
    DEST_COLUMNS,
    IMBALANCE_MIN_CPS,
    IMBALANCE_POINTS,
    DrainMap,
    dest_notes,
    dests_table,
    service_summary,
    suspect_dead,
)
from lvstop.tui.viewmodel.director import Setting, director_settings
from lvstop.tui.viewmodel.events import EVENT_COLUMNS, events_table, recent_events
from lvstop.tui.viewmodel.header import Chunk, PollHealth, fit_chunks, header_lines, status_chunks
from lvstop.tui.viewmodel.health import HealthMap
from lvstop.tui.viewmodel.history import DRAIN_DEPTH, HISTORY_DEPTH, TREND_WIDTH, History
from lvstop.tui.viewmodel.labels import (
    Names,
    dest_id,
    live_dests,
    no_names,
    service_flags,
    service_id,
    tunnel_label,
    vip_label,
)
from lvstop.tui.viewmodel.managers import ManagedMap
from lvstop.tui.viewmodel.services import SERVICE_COLUMNS, services_table
from lvstop.tui.viewmodel.settings import SortSpec, ViewSettings
from lvstop.tui.viewmodel.table import (
    MIN_SHRUNK,
    Column,
    Row,
    RowCache,
    TableModel,
    filter_line,
    visible_columns,
)
from lvstop.tui.viewmodel.tones import ACCENT, BAD, DIM, DRAINED, GOOD, WARN, Span
from lvstop.tui.viewmodel.weights import WeightEffect, weight_effect

__all__ = [
    "ACCENT",
    "BAD",
    "CONN_CLIENT_COLUMNS",
    "CONN_DEST_COLUMNS",
    "CONN_ENTRY_COLUMNS",
    "CONN_STATE_COLUMNS",
    "DEST_COLUMNS",
    "DIM",
    "DRAINED",
    "DRAIN_DEPTH",
    "EVENT_COLUMNS",
    "GOOD",
    "HISTORY_DEPTH",
    "IMBALANCE_MIN_CPS",
    "IMBALANCE_POINTS",
    "MIN_SHRUNK",
    "SERVICE_COLUMNS",
    "SIDE_SERVICES",
    "TREND_WIDTH",
    "WARN",
    "Brief",
    "Chunk",
    "Column",
    "ConnQuery",
    "ConnViews",
    "DrainMap",
    "HealthMap",
    "History",
    "ManagedMap",
    "Names",
    "PollHealth",
    "Row",
    "RowCache",
    "Setting",
    "SortSpec",
    "Span",
    "TableModel",
    "ViewSettings",
    "WeightEffect",
    "brief",
    "conn_query_text",
    "conn_views",
    "dest_id",
    "dest_notes",
    "dests_table",
    "director_settings",
    "events_table",
    "filter_line",
    "fit_chunks",
    "header_lines",
    "live_dests",
    "no_names",
    "parse_conn_filter",
    "recent_events",
    "service_flags",
    "service_id",
    "service_summary",
    "services_table",
    "side_by_side",
    "status_chunks",
    "suspect_dead",
    "tunnel_label",
    "vip_label",
    "visible_columns",
    "weight_effect",
]
