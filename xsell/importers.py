"""``xsell import``: public order datasets mapped onto the raw landing contract of :mod:`xsell.schemas`.

An importer maps representation; it does not clean. Zero or negative prices, negative quantities on
normal invoices, missing customer ids, unknown products and exact duplicate lines pass through unchanged,
so that validation quarantines or excludes them and counts them. Only representation is normalised (a
customer id written as a float, date formats, a byte-order mark, CRLF line ends). What a dataset lacks
and the contract needs is derived deterministically, as listed below; the same source always writes
the same bytes.

Written for every format: ``order_lines/date=D/<format>.csv`` for every day D with lines (the day of
``order_ts``, UTC, lines in source order), and a ``products`` and a ``customers`` snapshot for every
calendar day from the first to the last order day. Snapshots are point in time: the snapshot of day D
holds what was seen in the order lines up to and including D, computed from those lines only, one row
per product or customer in order of first appearance. A re-import replaces the date folders it writes
(everything is written to a temporary folder first and moved into place at the end); date folders
outside the imported range are left alone. A missing file or column raises :class:`SourceError` before
anything is written.

Derivations shared by the formats:

- ``line_number``: within an order, the distinct line contents (every field of the source row; for
  groceries-member the normalised product) are numbered 1, 2, 3... in order of first appearance; an exact
  duplicate line gets the number of its first copy, so it stays an exact duplicate that validation
  excludes (a numbering by position would turn it into a second valid line).
- customers: ``signup_date`` is the day of the customer's first line, ``consent_updated_at`` its
  timestamp (the earliest ``order_ts``, ties to the first in source order); ``marketing_consent`` is
  ``false`` when ``zlib.crc32(customer_id as UTF-8) % 10 == 0`` (about one customer in ten opts out),
  ``true`` otherwise; ``region`` is empty unless the format says otherwise.
- products: ``margin_rate`` is :data:`MARGIN_RATE` (none of the datasets has costs), ``family`` and
  ``tier`` are empty (no up-sell ladders), ``active`` is true.

``online-retail`` (SOURCE: the folder of daily UCI Online Retail CSVs): ``order_id`` = InvoiceNo,
``status`` = ``cancelled`` for invoices starting with ``C``, else ``completed`` (``A...`` adjustments
included); ``customer_id`` = CustomerID without its trailing ``.0`` (empty = guest); ``order_ts`` =
InvoiceDate read as UTC; ``product_id`` = StockCode exactly as written; quantity and price as written;
GBP, ``web``. Codes matching :data:`ONLINE_RETAIL_NON_PRODUCTS` (postage, fees, discounts, manual
lines, vouchers) stay in the order lines and are left out of the catalogue. A product's ``name`` is its
most frequent non-empty Description so far (stripped; ties to the smallest), ``category`` the first
entry of :data:`ONLINE_RETAIL_CATEGORIES` with a keyword among the name's words (else ``other``),
``list_price`` the median of its positive UnitPrices so far (empty while there is none: validation then
quarantines the product). ``region`` = Country of the customer's first line.

``groceries-member`` (SOURCE: Groceries_dataset.csv): a basket is a member's purchases on one day:
``order_id`` = ``<member>-<yyyymmdd>``, ``order_ts`` = that day at 12:00:00; ``product_id`` = the label
stripped and lower-cased (``name`` = its most frequent stripped spelling); quantity 1; ``unit_price``
and ``list_price`` = :data:`GROCERIES_UNIT_PRICE` (the dataset has no prices); GBP, ``store``,
``completed``. ``category`` = ``level1`` of the item hierarchy (``labels,level2,level1``; matched on the
stripped, lower-cased label; ``other`` when absent). Without an explicit hierarchy file,
``../groceries/groceries_item_hierarchy.csv`` next to the dataset's folder is used when it exists.

``instacart`` (SOURCE: the instacart_sample folder; ``user_history/df_sample.csv`` for the orders,
``products_full_catalog_from_Aarti1234.csv`` and ``departments.csv`` for the catalogue): the dataset has
no dates. A user's first order is dated the first day on or after :data:`INSTACART_ANCHOR` (a Sunday)
whose weekday is its ``order_dow`` (0 = Sunday, the usual reading); every later order adds its
``days_since_prior_order``. That column is capped at 30 ("30 or more"): a capped gap becomes the
smallest gap of at least 30 days that agrees with ``order_dow`` (uncapped gaps always agree with it in
this sample). ``order_ts`` = that date at ``order_hour_of_day``:00:00. ``line_number`` =
``add_to_cart_order``; quantity 1; ``unit_price`` and ``list_price`` = :data:`INSTACART_UNIT_PRICE`; USD,
``app``, ``completed``. ``name`` = product_name, ``category`` = department name. Products missing from
the catalogue are not added to it (none are in this sample). The last user of the sample may be cut
short; it is imported as it is.

``dunnhumby`` (SOURCE: the dunnhumby_complete_journey folder; ``transactions_sample.csv`` and
``products.csv``): ``order_id`` = basket_id, ``customer_id`` = household_id, ``order_ts`` =
transaction_timestamp converted from its UTC offset to UTC (so the order day is the UTC day);
quantity as written; ``unit_price`` = sales_value / quantity, unrounded, and empty when the quantity is 0
(there is no price to derive; validation quarantines such a line); USD, ``store``, ``completed``. ``category`` =
department; ``name`` = product_type (else product_category, else department) followed by package_size
when there is one; ``list_price`` = median of the positive unit prices so far. Products missing from
products.csv are not added (validation quarantines their lines as unknown products). demographics.csv
has nothing the contract holds (no region), so it is not read.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from xsell import schemas

ONLINE_RETAIL = "online-retail"
GROCERIES_MEMBER = "groceries-member"
INSTACART = "instacart"
DUNNHUMBY = "dunnhumby"
FORMATS = (ONLINE_RETAIL, GROCERIES_MEMBER, INSTACART, DUNNHUMBY)

ORDER_COLUMNS = schemas.column_names(schemas.ORDER_LINES_DDL)
PRODUCT_COLUMNS = schemas.column_names(schemas.PRODUCTS_DDL)
CUSTOMER_COLUMNS = schemas.column_names(schemas.CUSTOMERS_DDL)

#: No dataset has costs: one documented margin for every product.
MARGIN_RATE = 0.35
#: ``marketing_consent`` is false when crc32(customer_id) % CONSENT_MODULUS == 0 (about 10% opt-outs).
CONSENT_MODULUS = 10
OTHER = "other"

#: Online Retail stock codes that are not products (full match): postage (POST, DOT = dotcom postage,
#: C2 = carriage), manual lines (M, m), discounts (D), samples (S), bad-debt adjustments (B), charity
#: commission (CRUK), cushion pads (PADS), bank charges, Amazon fees, gift vouchers and the DCGS... lines
#: (eBay and one-off sales). Every code of the data outside the five-digit-plus-letters pattern is here.
ONLINE_RETAIL_NON_PRODUCTS = re.compile(
    r"POST|DOT|M|m|C2|D|S|B|CRUK|PADS|BANK CHARGES|AMAZONFEE|gift_0001_\d+|DCGS\w*"
)
#: Category of an Online Retail product: the first entry with a keyword among the words (runs of
#: letters) of the upper-cased name. Keywords were picked from the most frequent words of the names; on
#: the whole dataset about 10% of the products (6% of their lines) stay ``other``.
ONLINE_RETAIL_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas & easter", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWFLAKE", "SNOWMAN",
                            "NATIVITY", "BAUBLE", "BAUBLES", "EASTER", "STOCKING")),
    ("candles & lights", ("CANDLE", "CANDLES", "CANDLEHOLDER", "CANDLEPOT", "LIGHT", "LIGHTS", "NIGHTLIGHT",
                          "LANTERN", "LAMP", "LAMPSHADE", "TEALIGHT", "TEALIGHTS", "INCENSE", "OIL", "BURNER",
                          "MATCHES")),
    ("jewellery & accessories", ("NECKLACE", "NECKL", "BRACELET", "EARRINGS", "RING", "RINGS", "CHARM",
                                 "PENDANT", "BROOCH", "HAIR", "HAIRCLIP", "COMB", "BANGLE", "BEAD", "BEADS",
                                 "BEADED", "DIAMANTE", "JEWEL", "JEWELLED", "JEWELLERY", "BLING", "UMBRELLA",
                                 "SCARF", "GLOVES", "HAT", "KEYRING", "PURSE", "WALLET", "WARMER", "FAN",
                                 "PASSPORT")),
    ("bags", ("BAG", "BAGS", "HANDBAG", "WASHBAG", "SHOPPER", "TOTE", "BACKPACK", "RUCKSACK")),
    ("cards & wrap", ("CARD", "CARDS", "WRAP", "WRAPPING", "TAG", "TAGS", "TISSUE", "TISSUES", "RIBBON",
                      "RIBBONS", "ENVELOPE", "ENVELOPES", "GREETING", "CONFETTI", "INVITES")),
    ("stationery", ("NOTEBOOK", "NOTEBOOKS", "SKETCHBOOK", "BOOK", "BOOKS", "PEN", "PENS", "PENCIL", "PENCILS",
                    "ERASER", "ERASERS", "STICKER", "STICKERS", "TAPE", "JOURNAL", "DIARY", "NOTEPAD", "NOTE",
                    "NOTES", "CALENDAR", "RULER", "SHARPENER", "STAMP", "STAMPS", "CRAYONS", "CHALK", "MEMO",
                    "BOOKMARK", "PAPER", "STATIONERY", "PAPERWEIGHT")),
    ("toys & games", ("TOY", "TOYS", "GAME", "GAMES", "JIGSAW", "PUZZLE", "DOLL", "DOLLY", "DOLLS", "SKIPPING",
                      "SPINNING", "PLAYHOUSE", "DOMINOES", "TEDDY", "SOLDIER", "SOLDIERS", "RATTLE", "BLOCKS",
                      "KIT", "FELTCRAFT", "HARMONICA", "BINGO", "BALLOON", "BALLOONS", "CHILDRENS", "CHILDS",
                      "KIDS", "SPACEBOY", "DINOSAUR", "MAGIC", "LADDERS", "HELICOPTER", "DISC")),
    ("kitchen & dining", ("MUG", "MUGS", "CUP", "CUPS", "SAUCER", "SAUCERS", "BOWL", "BOWLS", "PLATE",
                          "PLATES", "CUTLERY", "TEA", "TEACUP", "TEAPOT", "COFFEE", "CAKE", "CAKES", "CAKESTAND",
                          "BAKING", "PAN", "JAR", "JARS", "TIN", "TINS", "NAPKIN", "NAPKINS", "APRON", "TOWEL",
                          "TOWELS", "KITCHEN", "PANTRY", "DINNER", "LUNCH", "JUG", "BEAKER", "TUMBLER",
                          "TUMBLERS", "TRAY", "DISH", "EGG", "EGGS", "SPOON", "SPOONS", "SCALES", "MOULD",
                          "CASES", "DOILIES", "DOILY", "STRAWS", "PICNIC", "RECIPE", "CHOPSTICKS", "COASTER",
                          "COASTERS", "PLACEMAT", "PLACEMATS", "JELLY", "ICE", "LOLLY", "BREAD", "BISCUIT",
                          "SUGAR", "MILK", "GLASS", "GLASSES", "CHOPPING", "BOARD", "SNACK", "BREAKFAST",
                          "CHOCOLATE", "OVEN", "MITT", "LADLE", "COOKIE", "CUTTER", "CUTTERS", "FOOD")),
    ("garden", ("GARDEN", "GARDENERS", "PLANT", "PLANTER", "PLANTERS", "WATERING", "SEED", "SEEDS", "BIRD",
                "BIRDS", "FEEDER", "BIRDHOUSE", "HERB", "TROWEL", "GNOME", "PARASOL", "HAMMOCK", "GREENHOUSE",
                "FLOWERPOT", "POT", "POTS", "WINDMILL", "WINDSOCK", "POTTING")),
    ("home decor", ("SIGN", "SIGNS", "FRAME", "FRAMES", "MIRROR", "CLOCK", "CUSHION", "COVER", "HOOK", "HOOKS",
                    "DOORSTOP", "DOORMAT", "MAT", "GARLAND", "BUNTING", "DECORATION", "DECORATIONS", "ORNAMENT",
                    "HANGER", "HANGERS", "VASE", "WREATH", "KNOB", "KNOBS", "DRAWER", "CABINET", "SHELF", "WALL",
                    "PHOTO", "PICTURE", "ART", "TILE", "MAGNET", "MAGNETS", "PLAQUE", "THROW", "BLANKET", "QUILT",
                    "CURTAIN", "RACK", "STORAGE", "BOX", "BOXES", "BASKET", "TRINKET", "CHEST", "DOOR", "HOLDER",
                    "HANGING", "HOT", "WATER", "BOTTLE", "BATHROOM", "BATH", "SOAP", "SPONGE", "CHIME", "CHIMES",
                    "CANVAS", "WICKER", "FLOWERS", "FLOWER", "HOME", "LETTERS", "BLACKBOARD", "BIN", "STOOL",
                    "CHAIR", "MOBILE")),
)

#: Groceries has no prices: every line and every list price.
GROCERIES_UNIT_PRICE = 1.0
GROCERIES_HOUR = 12
GROCERIES_HIERARCHY = Path("groceries") / "groceries_item_hierarchy.csv"

#: Instacart has no prices and no dates: a constant price, and dates anchored on a Sunday.
INSTACART_UNIT_PRICE = 1.0
INSTACART_ANCHOR = dt.date(2017, 1, 1)
INSTACART_GAP_CAP = 30
INSTACART_ORDERS = Path("user_history") / "df_sample.csv"
INSTACART_CATALOGUE = Path("products_full_catalog_from_Aarti1234.csv")
INSTACART_DEPARTMENTS = Path("departments.csv")

DUNNHUMBY_TRANSACTIONS = Path("transactions_sample.csv")
DUNNHUMBY_PRODUCTS = Path("products.csv")

ONLINE_RETAIL_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                         "CustomerID", "Country")
GROCERIES_COLUMNS = ("Member_number", "Date", "itemDescription")
HIERARCHY_COLUMNS = ("labels", "level1")
INSTACART_ORDER_COLUMNS = ("order_id", "user_id", "order_number", "order_dow", "order_hour_of_day",
                           "days_since_prior_order", "product_id", "add_to_cart_order")
INSTACART_CATALOGUE_COLUMNS = ("product_id", "product_name", "department_id")
INSTACART_DEPARTMENT_COLUMNS = ("department_id", "department")
DUNNHUMBY_TRANSACTION_COLUMNS = ("household_id", "basket_id", "product_id", "quantity", "sales_value",
                                 "transaction_timestamp")
DUNNHUMBY_PRODUCT_COLUMNS = ("product_id", "department", "product_category", "product_type", "package_size")

_DAY = "day"  # internal: the UTC day of an order line or of a snapshot event (datetime64, midnight)
_TS = "ts"  # internal: order_ts as datetime64


class SourceError(ValueError):
    """A source that cannot be imported (missing file or columns, unreadable values); nothing is written."""


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import read and wrote. Snapshot rows are summed over all snapshot days."""

    fmt: str
    rows_read: int
    order_lines: int
    product_rows: int
    customer_rows: int
    first_date: dt.date
    last_date: dt.date
    order_days: int
    snapshot_days: int
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = (f"{self.fmt}: {self.rows_read} rows read; {self.order_lines} order lines on {self.order_days} days, "
                f"{self.snapshot_days} daily snapshots ({self.product_rows} product rows, {self.customer_rows} "
                f"customer rows), {self.first_date}..{self.last_date}")
        return "; ".join((text, *self.notes))


@dataclasses.dataclass(frozen=True)
class Mapped:
    """A source in the contract, before anything is written.

    ``lines``: the contract's order-line columns as text plus ``day``, in source order. ``products`` and
    ``customers``: snapshot events, i.e. the contract columns plus ``day``, one row per key and day on which
    its state may have changed (the state holds until the key's next event).
    """

    lines: pd.DataFrame
    products: pd.DataFrame
    customers: pd.DataFrame
    rows_read: int
    notes: tuple[str, ...] = ()


# --- the formats --------------------------------------------------------------------------------------
def import_online_retail(source: Path, landing: Path) -> ImportReport:
    """Import the folder of daily UCI Online Retail CSVs (see the module docstring for the mapping)."""
    source = _folder(source)
    files = sorted(source.glob("*.csv"))
    if not files:
        raise SourceError(f"{source}: no .csv files")
    raw = pd.concat([_read_csv(path, ONLINE_RETAIL_COLUMNS).assign(source_file=str(path)) for path in files],
                    ignore_index=True)
    return _land(Path(landing), ONLINE_RETAIL, online_retail(raw))


def online_retail(raw: pd.DataFrame) -> Mapped:
    """Online Retail rows (text columns of :data:`ONLINE_RETAIL_COLUMNS` and ``source_file``) in the contract."""
    ts = _parse_timestamps(raw, "InvoiceDate", "%Y-%m-%d %H:%M:%S")
    invoice = raw["InvoiceNo"]
    lines = pd.DataFrame({
        "order_id": invoice,
        "line_number": _line_numbers(raw[list(ONLINE_RETAIL_COLUMNS)], order=invoice),
        "customer_id": raw["CustomerID"].str.replace(r"\.0$", "", regex=True),
        "order_ts": _timestamp_text(ts),
        "product_id": raw["StockCode"],
        "quantity": raw["Quantity"],
        "unit_price": raw["UnitPrice"],
        "currency": "GBP",
        "channel": "web",
        "status": np.where(invoice.str.startswith("C"), "cancelled", "completed"),
        _DAY: ts.dt.floor("D"),
        _TS: ts,
    })
    is_product = ~raw["StockCode"].str.fullmatch(ONLINE_RETAIL_NON_PRODUCTS.pattern)
    products = lines.loc[is_product, ["product_id", _DAY]]
    description = raw["Description"].str.strip()
    names = _running_mode(products.assign(value=description[is_product]).query("value != ''"))
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")
    prices = _running_median(products.assign(value=price[is_product]).query("value > 0"))
    catalogue = _as_of(_as_of(products.drop_duplicates(), names, "name"), prices, "list_price")
    catalogue["category"] = _categories(catalogue["name"])
    return Mapped(lines=lines, products=_product_events(catalogue), rows_read=len(raw),
                  customers=_customer_events(lines, region=raw["Country"]))


def import_groceries_member(source: Path, landing: Path, *, hierarchy: Path | None = None) -> ImportReport:
    """Import the Kaggle Groceries_dataset.csv; ``hierarchy`` defaults to the one beside the dataset."""
    source = Path(source)
    raw = _read_csv(source, GROCERIES_COLUMNS)
    notes = []
    if hierarchy is None:
        hierarchy = source.parent.parent / GROCERIES_HIERARCHY
        if not hierarchy.is_file():
            notes.append(f"no item hierarchy at {hierarchy}: every category is '{OTHER}'")
            hierarchy = None
    levels = _read_csv(Path(hierarchy), HIERARCHY_COLUMNS) if hierarchy is not None else None
    mapped = groceries_member(raw.assign(source_file=str(source)), levels)
    return _land(Path(landing), GROCERIES_MEMBER, dataclasses.replace(mapped, notes=(*notes, *mapped.notes)))


def groceries_member(raw: pd.DataFrame, hierarchy: pd.DataFrame | None) -> Mapped:
    """Groceries rows (Member_number, Date, itemDescription, source_file) in the contract."""
    day = _parse_timestamps(raw, "Date", "%d-%m-%Y")
    member = raw["Member_number"].str.strip()
    label = raw["itemDescription"].str.strip()
    product_id = label.str.lower()
    order_id = member + "-" + day.dt.strftime("%Y%m%d")
    ts = day + pd.Timedelta(hours=GROCERIES_HOUR)
    lines = pd.DataFrame({
        "order_id": order_id,
        "line_number": _line_numbers(product_id.to_frame(), order=order_id),
        "customer_id": member,
        "order_ts": _timestamp_text(ts),
        "product_id": product_id,
        "quantity": "1",
        "unit_price": GROCERIES_UNIT_PRICE,
        "currency": "GBP",
        "channel": "store",
        "status": "completed",
        _DAY: day,
        _TS: ts,
    })
    products = lines[["product_id", _DAY]]
    names = _running_mode(products.assign(value=label).query("value != ''"))
    catalogue = _as_of(products.drop_duplicates(), names, "name")
    notes: tuple[str, ...] = ()
    if hierarchy is None:
        catalogue["category"] = OTHER
    else:
        level1 = (hierarchy.assign(key=hierarchy["labels"].str.strip().str.lower())
                  .drop_duplicates("key").set_index("key")["level1"].str.strip())
        catalogue["category"] = catalogue["product_id"].map(level1).fillna(OTHER)
        unmatched = sorted(set(catalogue["product_id"]) - set(level1.index))
        if unmatched:
            notes = (f"{len(unmatched)} label(s) not in the hierarchy, category '{OTHER}': {', '.join(unmatched)}",)
    catalogue["list_price"] = GROCERIES_UNIT_PRICE
    return Mapped(lines=lines, products=_product_events(catalogue), customers=_customer_events(lines),
                  rows_read=len(raw), notes=notes)


def import_instacart(source: Path, landing: Path) -> ImportReport:
    """Import the instacart_sample folder: user_history/df_sample.csv and the full catalogue."""
    source = _folder(source)
    orders = _read_csv(source / INSTACART_ORDERS, INSTACART_ORDER_COLUMNS)
    catalogue = _read_csv(source / INSTACART_CATALOGUE, INSTACART_CATALOGUE_COLUMNS)
    departments = _read_csv(source / INSTACART_DEPARTMENTS, INSTACART_DEPARTMENT_COLUMNS)
    orders["source_file"] = str(source / INSTACART_ORDERS)
    return _land(Path(landing), INSTACART, instacart(orders, catalogue, departments))


def instacart(orders: pd.DataFrame, catalogue: pd.DataFrame, departments: pd.DataFrame) -> Mapped:
    """Instacart order lines (df_sample.csv, text, plus source_file) and catalogue in the contract."""
    number = {column: _numbers(orders, column, allow_empty=column == "days_since_prior_order")
              for column in ("order_number", "order_dow", "order_hour_of_day", "days_since_prior_order",
                             "add_to_cart_order")}
    day = _instacart_days(orders, number)
    ts = day + pd.to_timedelta(number["order_hour_of_day"], unit="h")
    lines = pd.DataFrame({
        "order_id": orders["order_id"],
        "line_number": number["add_to_cart_order"].astype("int64").astype(str),
        "customer_id": orders["user_id"],
        "order_ts": _timestamp_text(ts),
        "product_id": orders["product_id"],
        "quantity": "1",
        "unit_price": INSTACART_UNIT_PRICE,
        "currency": "USD",
        "channel": "app",
        "status": "completed",
        _DAY: day,
        _TS: ts,
    })
    department = departments.drop_duplicates("department_id").set_index("department_id")["department"]
    products = (catalogue.drop_duplicates("product_id")
                .assign(name=lambda frame: frame["product_name"],
                        category=lambda frame: frame["department_id"].map(department))
                .loc[:, ["product_id", "name", "category"]])
    seen = lines[["product_id", _DAY]].sort_values(_DAY, kind="stable").drop_duplicates("product_id")
    known = seen.merge(products, on="product_id", how="inner").assign(list_price=INSTACART_UNIT_PRICE)
    return Mapped(lines=lines, products=_product_events(known), customers=_customer_events(lines),
                  rows_read=len(orders))


def _instacart_days(orders: pd.DataFrame, number: dict[str, pd.Series]) -> pd.Series:
    """Each line's order date: the user's first order on the anchor's week, then the gaps added up."""
    frame = pd.DataFrame({"order_id": orders["order_id"], "user": orders["user_id"], **number})
    per_order = frame.drop_duplicates("order_id").sort_values(["user", "order_number"], kind="stable")
    first = ~per_order["user"].duplicated()
    gap = per_order["days_since_prior_order"]
    missing = gap.isna() & ~first
    if missing.any():
        row = per_order[missing].iloc[0]
        raise SourceError(f"{orders['source_file'].iloc[0]}: order {row['order_id']} is not the user's first "
                          "but has no days_since_prior_order")
    dow = per_order["order_dow"]
    previous_dow = dow.groupby(per_order["user"]).shift()
    capped = gap >= INSTACART_GAP_CAP
    # A capped gap ("30 or more") becomes the smallest gap >= 30 that lands on the order's weekday.
    gap = gap.where(~capped, INSTACART_GAP_CAP + (dow - previous_dow - INSTACART_GAP_CAP) % 7)
    anchor_dow = (INSTACART_ANCHOR.weekday() + 1) % 7  # order_dow counts from Sunday = 0
    gap = gap.where(~first, (dow - anchor_dow) % 7)
    offset = gap.groupby(per_order["user"]).cumsum()
    day = pd.Timestamp(INSTACART_ANCHOR) + pd.to_timedelta(offset, unit="D")
    return orders["order_id"].map(pd.Series(day.to_numpy(), index=per_order["order_id"].to_numpy()))


def import_dunnhumby(source: Path, landing: Path) -> ImportReport:
    """Import the dunnhumby_complete_journey folder: transactions_sample.csv and products.csv."""
    source = _folder(source)
    transactions = _read_csv(source / DUNNHUMBY_TRANSACTIONS, DUNNHUMBY_TRANSACTION_COLUMNS)
    products = _read_csv(source / DUNNHUMBY_PRODUCTS, DUNNHUMBY_PRODUCT_COLUMNS)
    transactions["source_file"] = str(source / DUNNHUMBY_TRANSACTIONS)
    return _land(Path(landing), DUNNHUMBY, dunnhumby(transactions, products))


def dunnhumby(transactions: pd.DataFrame, products: pd.DataFrame) -> Mapped:
    """Complete Journey transactions (every column as text, plus source_file) and products in the contract."""
    ts = _parse_timestamps(transactions, "transaction_timestamp", "%Y-%m-%d %H:%M:%S%z")
    quantity = pd.to_numeric(transactions["quantity"], errors="coerce")
    sales = pd.to_numeric(transactions["sales_value"], errors="coerce")
    unit_price = (sales / quantity).where(quantity != 0)
    lines = pd.DataFrame({
        "order_id": transactions["basket_id"],
        "line_number": _line_numbers(transactions.drop(columns="source_file"), order=transactions["basket_id"]),
        "customer_id": transactions["household_id"],
        "order_ts": _timestamp_text(ts),
        "product_id": transactions["product_id"],
        "quantity": transactions["quantity"],
        "unit_price": unit_price,
        "currency": "USD",
        "channel": "store",
        "status": "completed",
        _DAY: ts.dt.floor("D"),
        _TS: ts,
    })
    catalogue = products.drop_duplicates("product_id").assign(
        name=lambda frame: _first_non_empty(frame, ("product_type", "product_category", "department"))
        + frame["package_size"].str.strip().map(lambda size: f" {size}" if size else ""),
        category=lambda frame: frame["department"],
    )[["product_id", "name", "category"]]
    seen = lines[["product_id", _DAY]]
    prices = _running_median(seen.assign(value=unit_price).query("value > 0"))
    known = seen.drop_duplicates().merge(catalogue, on="product_id", how="inner")
    return Mapped(lines=lines, products=_product_events(_as_of(known, prices, "list_price")),
                  customers=_customer_events(lines), rows_read=len(transactions))


IMPORTERS: dict[str, Callable[[Path, Path], ImportReport]] = {
    ONLINE_RETAIL: import_online_retail,
    GROCERIES_MEMBER: import_groceries_member,
    INSTACART: import_instacart,
    DUNNHUMBY: import_dunnhumby,
}


def import_source(fmt: str, source: Path, landing: Path, *, hierarchy: Path | None = None) -> ImportReport:
    """Import ``source`` of format ``fmt`` (one of :data:`FORMATS`) into the landing zone ``landing``."""
    if fmt not in IMPORTERS:
        raise SourceError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == GROCERIES_MEMBER:
        return import_groceries_member(source, landing, hierarchy=hierarchy)
    if hierarchy is not None:
        raise SourceError(f"a hierarchy file applies to {GROCERIES_MEMBER} only, not to {fmt}")
    return IMPORTERS[fmt](source, landing)


# --- derivations shared by the formats -------------------------------------------------------------
def _line_numbers(content: pd.DataFrame, *, order: pd.Series) -> pd.Series:
    """1, 2, 3... per distinct ``content`` row within an order, in order of first appearance; copies share it."""
    content_id = content.assign(_order=order.to_numpy()).groupby(
        [*content.columns, "_order"], sort=False, dropna=False).ngroup()
    first = ~content_id.duplicated()
    number_of_first = first.astype("int64").groupby(order.to_numpy()).cumsum()[first]
    number = pd.Series(number_of_first.to_numpy(), index=content_id[first].to_numpy())
    return content_id.map(number).astype(str)


def _running_mode(obs: pd.DataFrame) -> pd.DataFrame:
    """Per (product_id, day) of ``obs``: the most frequent ``value`` up to that day, ties to the smallest.

    A value's running count only grows, so the mode as of a day is the (count, value) row ranked best,
    count descending then value ascending, among all rows dated up to that day: a running minimum of ranks.
    """
    counts = obs.groupby(["product_id", "value", _DAY]).size().rename("n").reset_index()
    counts["n"] = counts.groupby(["product_id", "value"])["n"].cumsum()
    counts = counts.sort_values(["product_id", "n", "value"], ascending=[True, False, True], kind="stable")
    counts["rank"] = np.arange(len(counts))
    counts = counts.sort_values(["product_id", _DAY, "rank"], kind="stable")
    best = counts.groupby("product_id")["rank"].cummin()
    value_by_rank = counts.set_index("rank")["value"]
    per_day = counts.assign(best=best).drop_duplicates(["product_id", _DAY], keep="last")
    return per_day.assign(value=value_by_rank.loc[per_day["best"]].to_numpy())[["product_id", _DAY, "value"]]


def _running_median(obs: pd.DataFrame) -> pd.DataFrame:
    """Per (product_id, day) of ``obs``: the median of ``value`` over every row up to that day.

    Every distinct value of a product is counted as of each of its days (the running count of the last
    day on or before); the median is then read off the cumulative counts (the mean of the two middle values
    for an even count, like ``pandas.Series.median``).
    """
    keys = ["product_id", "value"]
    counts = obs.groupby([*keys, _DAY]).size().rename("n").reset_index()
    counts["n"] = counts.groupby(keys)["n"].cumsum()
    grid = counts[["product_id", _DAY]].drop_duplicates().merge(
        counts[keys].drop_duplicates(), on="product_id", how="inner")
    grid = pd.merge_asof(grid.sort_values(_DAY), counts.sort_values(_DAY), on=_DAY, by=keys)
    grid = grid.dropna(subset=["n"]).sort_values(["product_id", _DAY, "value"])
    groups = grid.groupby(["product_id", _DAY])
    below = groups["n"].cumsum()
    total = groups["n"].transform("sum")
    middle = [grid[below >= rank].groupby(["product_id", _DAY])["value"].first()
              for rank in ((total + 1) // 2, total // 2 + 1)]
    return ((middle[0] + middle[1]) / 2).rename("value").reset_index()


def _as_of(events: pd.DataFrame, values: pd.DataFrame, name: str) -> pd.DataFrame:
    """``events`` (product_id, day, ...) with ``values``' latest value on or before each day, as ``name``."""
    merged = pd.merge_asof(events.sort_values(_DAY, kind="stable"),
                           values.rename(columns={"value": name}).sort_values(_DAY, kind="stable"),
                           on=_DAY, by="product_id")
    return merged.sort_values(["product_id", _DAY], kind="stable").reset_index(drop=True)


def _categories(names: pd.Series) -> pd.Series:
    """The :data:`ONLINE_RETAIL_CATEGORIES` category of each name (``other`` for none or an empty name)."""
    distinct = names.dropna().unique()
    upper = pd.Series(distinct, index=distinct).str.upper()
    category = pd.Series(OTHER, index=distinct, dtype=object)
    for name, keywords in reversed(ONLINE_RETAIL_CATEGORIES):  # reversed: the first entry is written last
        category[upper.str.contains(rf"(?<![A-Z])(?:{'|'.join(keywords)})(?![A-Z])", regex=True)] = name
    return names.map(category).fillna(OTHER)


def _product_events(catalogue: pd.DataFrame) -> pd.DataFrame:
    """Snapshot events of products from (product_id, day, name, category, list_price)."""
    named = catalogue.loc[catalogue["product_id"] != ""]
    return named.assign(family=None, tier=None, margin_rate=MARGIN_RATE, active="true")[[*PRODUCT_COLUMNS, _DAY]]


def _customer_events(lines: pd.DataFrame, *, region: pd.Series | None = None) -> pd.DataFrame:
    """One snapshot event per customer, on the day of its first line (earliest order_ts, then source order)."""
    known = lines.assign(region=region).loc[lines["customer_id"] != ""]
    first = known.sort_values(_TS, kind="stable").drop_duplicates("customer_id")
    return pd.DataFrame({
        "customer_id": first["customer_id"],
        "signup_date": first[_DAY].dt.strftime("%Y-%m-%d"),
        "region": first["region"],
        "marketing_consent": np.where(_opted_out(first["customer_id"]), "false", "true"),
        "consent_updated_at": first["order_ts"],
        _DAY: first[_DAY],
    })


def _opted_out(customer_ids: pd.Series) -> np.ndarray:
    return np.array([zlib.crc32(value.encode()) % CONSENT_MODULUS == 0 for value in customer_ids], dtype=bool)


def _first_non_empty(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    result = frame[columns[-1]].str.strip()
    for column in reversed(columns[:-1]):
        value = frame[column].str.strip()
        result = value.where(value != "", result)
    return result


# --- reading ------------------------------------------------------------------------------------------
def _folder(source: Path) -> Path:
    source = Path(source)
    if not source.is_dir():
        raise SourceError(f"{source}: folder not found")
    return source


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Every column of a CSV file as text (empty string for empty), after checking the header."""
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        missing = [column for column in required if column not in header]
        if missing:
            raise SourceError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(required)})")
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise SourceError(f"{path}: not a readable CSV file ({error})") from None


def _parse_timestamps(raw: pd.DataFrame, column: str, fmt: str) -> pd.Series:
    """``column`` parsed with ``fmt`` as UTC, without a time zone; a value that does not parse is an error."""
    parsed = pd.to_datetime(raw[column].str.strip(), format=fmt, errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        row = raw[bad].iloc[0]
        raise SourceError(f"{row['source_file']}: {column} {row[column]!r} does not match {fmt} "
                          f"({int(bad.sum())} value(s))")
    return parsed.dt.tz_convert(None)


def _numbers(raw: pd.DataFrame, column: str, *, allow_empty: bool = False) -> pd.Series:
    """``column`` as floats (the datasets write counters as ``1.0``); a value that does not parse is an error."""
    text = raw[column].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() & ((text != "") | (not allow_empty))
    if bad.any():
        row = raw[bad].iloc[0]
        raise SourceError(f"{row['source_file']}: {column} {row[column]!r} is not a number ({int(bad.sum())} value(s))")
    return values


def _timestamp_text(ts: pd.Series) -> np.ndarray:
    text = np.datetime_as_string(ts.to_numpy().astype("datetime64[s]"), unit="s")
    return np.char.replace(text, "T", " ").astype(object)


# --- writing ------------------------------------------------------------------------------------------
def _land(landing: Path, fmt: str, mapped: Mapped) -> ImportReport:
    """Write the mapped source into a temporary folder of ``landing``, then move its date folders in place."""
    if mapped.lines.empty:
        raise SourceError(f"{fmt}: the source has no rows")
    days = pd.date_range(mapped.lines[_DAY].min(), mapped.lines[_DAY].max(), freq="D")
    file_name = f"{fmt}.csv"
    landing.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=landing))
    try:
        order_lines, order_days = _write_order_lines(staging / schemas.ORDER_LINES, mapped.lines, file_name)
        product_rows = _write_snapshots(staging / schemas.PRODUCTS, mapped.products, key="product_id",
                                        columns=PRODUCT_COLUMNS, days=days, file_name=file_name)
        customer_rows = _write_snapshots(staging / schemas.CUSTOMERS, mapped.customers, key="customer_id",
                                         columns=CUSTOMER_COLUMNS, days=days, file_name=file_name)
        for table in schemas.RAW_TABLES:
            for folder in sorted((staging / table).iterdir()):
                target = landing / table / folder.name
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportReport(fmt=fmt, rows_read=mapped.rows_read, order_lines=order_lines, product_rows=product_rows,
                        customer_rows=customer_rows, first_date=days[0].date(), last_date=days[-1].date(),
                        order_days=order_days, snapshot_days=len(days), notes=mapped.notes)


class _Lines(list):
    """A file-like list: ``csv.writer.writerow`` calls ``write`` once per row with the whole line."""

    write = list.append


def _csv_lines(frame: pd.DataFrame) -> list[str]:
    """Each row as one CSV line (minimal quoting, ``\\n``); NaN and None become empty fields."""
    values = frame.astype(object).where(frame.notna(), None)
    lines = _Lines()
    csv.writer(lines, lineterminator="\n").writerows(values.itertuples(index=False, name=None))
    return lines


def _write_order_lines(folder: Path, lines: pd.DataFrame, file_name: str) -> tuple[int, int]:
    """One file per day, lines in source order; returns (rows, days)."""
    lines = lines.sort_values(_DAY, kind="stable")
    text = _csv_lines(lines[ORDER_COLUMNS])
    header = ",".join(ORDER_COLUMNS) + "\n"
    day_values = lines[_DAY].to_numpy()
    starts = np.flatnonzero(np.r_[True, day_values[1:] != day_values[:-1]])
    for start, end in zip(starts, [*starts[1:], len(lines)]):
        _write_text(folder / f"date={pd.Timestamp(day_values[start]):%Y-%m-%d}" / file_name,
                    header + "".join(text[start:end]))
    return len(lines), len(starts)


def _write_snapshots(folder: Path, events: pd.DataFrame, *, key: str, columns: Sequence[str],
                     days: pd.DatetimeIndex, file_name: str) -> int:
    """One snapshot per day: every key with an event on or before it, in its latest state; returns rows.

    Each event row is rendered once; a day's file is the current line of every key seen so far (keys are
    slotted in order of first appearance, so the keys seen so far are a prefix of the slots).
    """
    events = events.sort_values([_DAY, key], kind="stable").drop_duplicates([key, _DAY], keep="last")
    slots = pd.factorize(events[key])[0]
    text = np.array(_csv_lines(events[list(columns)]), dtype=object)
    ends = np.searchsorted(events[_DAY].to_numpy(), np.asarray(days, dtype="datetime64[ns]"), side="right")
    current = np.empty(len(text), dtype=object)
    header = ",".join(columns) + "\n"
    start = seen = rows = 0
    for day, end in zip(days, ends):
        if end > start:
            current[slots[start:end]] = text[start:end]
            seen = max(seen, int(slots[start:end].max()) + 1)
            start = end
        _write_text(folder / f"date={day:%Y-%m-%d}" / file_name, header + "".join(current[:seen].tolist()))
        rows += seen
    return rows


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
