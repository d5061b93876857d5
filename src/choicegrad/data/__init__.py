"""Choice spaces, table loading and validation, the below-quantile split."""

from choicegrad.data.space import MISSING, ChoiceSpace, Slot
from choicegrad.data.table import (TABLE_SUFFIXES, ContextEncoder, TableData, hold_out_upper, load_table,
                                   read_table, split_below_quantile, write_table)

__all__ = ["MISSING", "TABLE_SUFFIXES", "ChoiceSpace", "ContextEncoder", "Slot", "TableData", "hold_out_upper",
           "load_table", "read_table", "split_below_quantile", "write_table"]
