"""storage: every Zarr, xarray, fsspec and file-format access of vardax-cycle."""

from ._cycles import CycleAxis as CycleAxis
from ._cycles import cycle_id as cycle_id
from ._cycles import iso as iso
from ._cycles import parse_interval as parse_interval
from ._cycles import parse_time as parse_time
from ._errors import CycleError as CycleError
from ._errors import ObservationError as ObservationError
from ._errors import StoreError as StoreError
from ._errors import StoreLockedError as StoreLockedError
from ._errors import StoreMismatchError as StoreMismatchError
from ._layout import DIAGNOSTICS as DIAGNOSTICS
from ._layout import DONE as DONE
from ._layout import QC as QC
from ._layout import STATUS as STATUS
from ._layout import StoreLayout as StoreLayout
from ._lock import LockInfo as LockInfo
from ._store import CycleStore as CycleStore
from ._store import content_hash as content_hash
from ._store import open_zarr_store as open_zarr_store
