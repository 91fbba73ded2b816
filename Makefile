# xsell: `make demo` runs the nightly pipeline end to end on generated data; `make test` runs the tests.
# Both create (or reuse) the virtual environment .venv and install what they need. Java 17+ is the only
# prerequisite beyond Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
XSELL_HOME ?= $(CURDIR)/var
DEMO_START ?= 2024-10-01
DEMO_CAMPAIGN_DATE ?= 2025-10-31
DEMO_DATE ?= 2025-11-30
DEMO_CUSTOMERS ?= 4000
PG_JAR ?= /usr/share/java/postgresql.jar
PG_HOST ?= 127.0.0.1

export XSELL_HOME
export PATH := $(BIN):$(PATH)
export PYSPARK_PYTHON := $(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(BIN)/python
export SPARK_LOCAL_IP ?= 127.0.0.1
export AIRFLOW_HOME := $(XSELL_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW_CONN_XSELL_SPARK ?= {"conn_type": "spark", "host": "local[2]"}
export GX_ANALYTICS_ENABLED := False
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: demo demo-postgres demo-online-retail test java venv jdbc clean airflow-db

# The demo: a first nightly run for DEMO_CAMPAIGN_DATE publishes an audience (the campaign); the world then
# runs on past it, treated customers responding with the generator's planted uplift; the nightly run for
# DEMO_DATE (at least a horizon later) publishes again and measures the campaign against its control cell.
DAYS = $(BIN)/python -c "import datetime as d, sys; print(d.date.fromisoformat(sys.argv[1]) + d.timedelta(days=int(sys.argv[2])))"
demo: export XSELL_ENV ?= demo
demo: java venv
	@echo "==> [1/7] generating the demo world ($(DEMO_CUSTOMERS) customers, $(DEMO_START)..$(DEMO_CAMPAIGN_DATE)) in $(XSELL_HOME)"
	$(BIN)/xsell generate --customers $(DEMO_CUSTOMERS) --start $(DEMO_START) --end $(DEMO_CAMPAIGN_DATE) \
	  --truth-cutoff $$($(DAYS) $(DEMO_CAMPAIGN_DATE) -30)
	@echo "==> [2/7] validating the history before $(DEMO_CAMPAIGN_DATE) into the lake (a one-off backfill)"
	$(BIN)/python -m jobs.validate --run-date $$($(DAYS) $(DEMO_CAMPAIGN_DATE) -1) --since $(DEMO_START) --run-id backfill__$(DEMO_CAMPAIGN_DATE)
	@echo "==> [3/7] preparing the Airflow metadata database in $(AIRFLOW_HOME)"
	@$(MAKE) --no-print-directory airflow-db
	@echo "==> [4/7] the xsell_nightly DAG through Airflow for $(DEMO_CAMPAIGN_DATE): the campaign's audience"
	$(BIN)/python dags/xsell_nightly.py $(DEMO_CAMPAIGN_DATE)
	@echo "==> [5/7] the world runs on to $(DEMO_DATE); treated customers respond with the planted uplift"
	$(BIN)/xsell simulate-campaign --run-date $(DEMO_CAMPAIGN_DATE) --until $(DEMO_DATE)
	@echo "==> [6/7] validating the days since the campaign"
	$(BIN)/python -m jobs.validate --run-date $$($(DAYS) $(DEMO_DATE) -1) --since $$($(DAYS) $(DEMO_CAMPAIGN_DATE) 1) --run-id backfill__$(DEMO_DATE)
	@echo "==> [7/7] the xsell_nightly DAG for $(DEMO_DATE): a new audience, and the campaign of $(DEMO_CAMPAIGN_DATE) measured"
	$(BIN)/python dags/xsell_nightly.py $(DEMO_DATE)
	$(BIN)/xsell summary --run-date $(DEMO_DATE)
	@echo "planted uplifts (the truth the measurement should recover): $(XSELL_HOME)/truth/campaigns/run_date=$(DEMO_CAMPAIGN_DATE)/planted.csv"
	@echo "(make demo-postgres publishes the same audience to PostgreSQL, the production target)"

# The same audience, published to the production target: PostgreSQL database `xsell`, schema `xsell`.
demo-postgres: java venv
	@echo "==> publishing the $(DEMO_DATE) audience to PostgreSQL too ($(PG_HOST):5432, database xsell)"
	@psql -h $(PG_HOST) -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'xsell'" | grep -q 1 || \
	  psql -h $(PG_HOST) -U postgres -d postgres -qc "CREATE DATABASE xsell"
	XSELL_ENV=demo,postgres $(BIN)/python -m jobs.basket_rules --run-date $(DEMO_DATE) --run-id demo-postgres
	XSELL_ENV=demo,postgres $(BIN)/python -m jobs.score_publish --run-date $(DEMO_DATE) --run-id demo-postgres
	XSELL_ENV=demo,postgres $(BIN)/xsell summary --run-date $(DEMO_DATE)

# The nightly DAG on real data: UCI Online Retail, imported onto the raw contract. ONLINE_RETAIL_DIR is the
# folder of its daily CSVs (default: $(XSELL_SHARED_DATA)/online_retail/by-day). State goes to var/online-retail.
RETAIL_HOME := $(CURDIR)/var/online-retail
RETAIL_DATE ?= 2011-09-30
ONLINE_RETAIL_DIR ?= $(XSELL_SHARED_DATA)/online_retail/by-day
demo-online-retail: java venv
	@test -d "$(ONLINE_RETAIL_DIR)" || (echo "ONLINE_RETAIL_DIR='$(ONLINE_RETAIL_DIR)' is not a folder: set it (or XSELL_SHARED_DATA) to the Online Retail by-day CSVs"; exit 2)
	XSELL_HOME=$(RETAIL_HOME) $(BIN)/xsell import online-retail $(ONLINE_RETAIL_DIR)
	XSELL_HOME=$(RETAIL_HOME) XSELL_ENV=online_retail $(BIN)/python -m jobs.validate --run-date $$($(BIN)/python -c "import datetime as d; print(d.date.fromisoformat('$(RETAIL_DATE)') - d.timedelta(days=1))") --since 2010-12-01 --run-id backfill__$(RETAIL_DATE)
	@$(MAKE) --no-print-directory airflow-db XSELL_HOME=$(RETAIL_HOME) AIRFLOW_HOME=$(RETAIL_HOME)/airflow
	XSELL_HOME=$(RETAIL_HOME) AIRFLOW_HOME=$(RETAIL_HOME)/airflow XSELL_ENV=online_retail $(BIN)/python dags/xsell_nightly.py $(RETAIL_DATE)
	XSELL_HOME=$(RETAIL_HOME) XSELL_ENV=online_retail $(BIN)/xsell summary --run-date $(RETAIL_DATE)

airflow-db:
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

test: java venv jdbc
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20 $(PYTEST_ARGS)

java:
	@v=$$(java -version 2>&1 | awk -F '"' '/version/ {print $$2}' | cut -d. -f1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then \
	  echo "xsell needs Java 17 or newer for Spark (found: '$${v:-none}')."; \
	  echo "Install it, for example: sudo apt-get install openjdk-17-jre-headless (Debian/Ubuntu) or brew install openjdk@17 (macOS)."; \
	  exit 1; fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || (echo "xsell needs Python 3.11"; exit 1)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@# Byte-compiled once, on both cores. Where PYTHONDONTWRITEBYTECODE is set, no process writes the cache,
	@# and every one (each spark-submit task, notebook kernel and test worker) compiled its imports again
	@# from source: importing great_expectations took 23 s that way, 11 s compiled.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $@

# The PostgreSQL JDBC driver, from Debian's libpostgresql-jdbc-java where it can be installed.
jdbc:
	@test -f $(PG_JAR) || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -q libpostgresql-jdbc-java >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q libpostgresql-jdbc-java >/dev/null))) || \
	  echo "note: $(PG_JAR) is missing; PostgreSQL publish tests will skip (install libpostgresql-jdbc-java)"

clean:
	rm -rf $(XSELL_HOME)
