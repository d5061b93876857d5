"""Choice spaces, table loading and validation, context encoding, the below-quantile split."""

from choicegrad.data.context import ContextColumn, ContextEncoder
from choicegrad.data.space import MISSING, ChoiceSpace, Slot
from choicegrad.data.split import hold_out_upper, split_below_quantile
from choicegrad.data.table import TableData, load_table
from choicegrad.io import TABLE_SUFFIXES, read_table, write_table

__all__ = ["MISSING", "TABLE_SUFFIXES", "ChoiceSpace", "ContextColumn", "ContextEncoder", "Slot", "TableData",
           "hold_out_upper", "load_table", "read_table", "split_below_quantile", "write_table"]
