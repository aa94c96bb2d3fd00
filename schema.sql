-- Waymark schema, MySQL/MariaDB dialect. Loads as it is with: mysql DBNAME < schema.sql
-- db.py also derives the SQLite schema from this file (see Backend.ddl), so keep to the
-- shared subset: one statement per ";" at a line end, no ";" inside a statement.
-- Times are UTC seconds since the epoch (BIGINT); money is integer pence.
-- *_key columns hold the casefolded, space-normalised form used for matching; the
-- binary collation makes those comparisons exact on both backends. Indexes are declared
-- inside CREATE TABLE so the whole file can run again harmlessly (IF NOT EXISTS).
-- version columns (users, shop_books, lending_books) are written by every transaction whose
-- rule that row serialises: on a Galera cluster a lock on a row that is only read protects
-- nothing across nodes, while two writes of one row fail certification and are retried.
-- A database made at an older schema version gains new columns through migrations.MIGRATIONS.
-- order_lines: backorder_cancelled counts back-ordered copies the customer cancelled; they are
-- no longer owed (not in backorder_outstanding), priced or counted toward the copy limit.

CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL,
    applied_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS users (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    username VARCHAR(32) NOT NULL,
    username_key VARCHAR(32) NOT NULL UNIQUE,
    password_hash VARCHAR(100) NOT NULL,
    role VARCHAR(10) NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    created_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    email VARCHAR(254),
    blocked_reason VARCHAR(200),
    must_change_password INTEGER NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sessions (
    token_hash CHAR(64) NOT NULL PRIMARY KEY,
    user_id INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    INDEX sessions_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS login_failures (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    username_key VARCHAR(64) NOT NULL,
    address VARCHAR(64) NOT NULL,
    failed_at BIGINT NOT NULL,
    INDEX login_failures_by_user (username_key, failed_at),
    INDEX login_failures_by_address (address, failed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per name tried at login, written by every try: it serialises the throttle's count
-- for that name across connections, processes and cluster nodes (see start_login).
CREATE TABLE IF NOT EXISTS login_names (
    username_key VARCHAR(64) NOT NULL PRIMARY KEY,
    attempts BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS shop_books (
    number INTEGER NOT NULL PRIMARY KEY,
    title VARCHAR(200) NOT NULL,
    title_key VARCHAR(200) NOT NULL UNIQUE,
    price_pence INTEGER NOT NULL CHECK (price_pence >= 0),
    in_stock INTEGER NOT NULL CHECK (in_stock >= 0),
    version BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS walks (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    name VARCHAR(200) NOT NULL,
    name_key VARCHAR(200) NOT NULL,
    area VARCHAR(100) NOT NULL,
    area_key VARCHAR(100) NOT NULL,
    distance_miles DECIMAL(6, 2) NOT NULL CHECK (distance_miles > 0),
    difficulty VARCHAR(10) NOT NULL CHECK (difficulty IN ('easy', 'medium', 'hard')),
    page INTEGER NOT NULL,
    book_number INTEGER NOT NULL,
    ascent_m INTEGER,
    time_hours DECIMAL(5, 2),
    route_type VARCHAR(20),
    start_grid_ref VARCHAR(20),
    UNIQUE (book_number, name_key),
    FOREIGN KEY (book_number) REFERENCES shop_books (number),
    INDEX walks_by_area (area_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS orders (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    user_id INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    subtotal_pence INTEGER NOT NULL,
    discount_pence INTEGER NOT NULL,
    total_pence INTEGER NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS order_lines (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    order_id INTEGER NOT NULL,
    book_number INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    fulfilled INTEGER NOT NULL CHECK (fulfilled >= 0),
    backordered INTEGER NOT NULL CHECK (backordered >= 0),
    backorder_outstanding INTEGER NOT NULL CHECK (backorder_outstanding >= 0),
    backorder_cancelled INTEGER NOT NULL DEFAULT 0 CHECK (backorder_cancelled >= 0),
    unit_price_pence INTEGER NOT NULL,
    CHECK (fulfilled + backordered = quantity),
    CHECK (backorder_outstanding <= backordered),
    CONSTRAINT order_lines_cancelled_within CHECK (backorder_outstanding + backorder_cancelled <= backordered),
    FOREIGN KEY (order_id) REFERENCES orders (id),
    FOREIGN KEY (book_number) REFERENCES shop_books (number),
    INDEX order_lines_backorders (book_number, backorder_outstanding)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS lending_books (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    ol_key VARCHAR(64) UNIQUE,
    title VARCHAR(300) NOT NULL,
    title_key VARCHAR(300) NOT NULL,
    authors TEXT NOT NULL,
    search_key TEXT NOT NULL,
    first_publish_year INTEGER,
    copies INTEGER NOT NULL CHECK (copies >= 0),
    version BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- active_user_id is user_id while a loan is out and NULL once returned, so the unique key
-- allows one active loan of a book per member (NULLs never collide) and any number of past ones.
CREATE TABLE IF NOT EXISTS loans (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    user_id INTEGER NOT NULL,
    book_id INTEGER NOT NULL,
    borrowed_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    returned_at BIGINT,
    renewals INTEGER NOT NULL DEFAULT 0 CHECK (renewals >= 0),
    active_user_id INTEGER,
    UNIQUE (book_id, active_user_id),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (book_id) REFERENCES lending_books (id),
    INDEX loans_by_user (user_id, returned_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A hold waits in its book's queue (ready_until NULL), then is kept ready until ready_until,
-- then ends (ended_at set). active_user_id works as for loans: one open hold per member and book.
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    user_id INTEGER NOT NULL,
    book_id INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    ready_until BIGINT,
    ended_at BIGINT,
    end_reason VARCHAR(20),
    active_user_id INTEGER,
    UNIQUE (book_id, active_user_id),
    FOREIGN KEY (user_id) REFERENCES users (id),
    FOREIGN KEY (book_id) REFERENCES lending_books (id),
    INDEX holds_by_user (user_id, ended_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The outbox: what the server told a member (PROTOCOL.md 1.2, Notices). A notice is made in
-- the transaction of its cause; dedupe_key names the cause (the loan and step of an overdue
-- reminder, say), so the unique key lets it be made once however many servers sweep at once.
-- The mail_* columns are the sender's: a sender claims a row (mail_claimed_until) before it
-- sends, so each notice leaves from one server; mail_state is pending, sent, failed or none.
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER NOT NULL PRIMARY KEY AUTO_INCREMENT,
    user_id INTEGER NOT NULL,
    kind VARCHAR(20) NOT NULL,
    dedupe_key VARCHAR(100) NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    subject VARCHAR(200) NOT NULL,
    body TEXT NOT NULL,
    details TEXT NOT NULL,
    read_at BIGINT,
    mail_state VARCHAR(10) NOT NULL DEFAULT 'none',
    mail_attempts INTEGER NOT NULL DEFAULT 0,
    mail_next_at BIGINT,
    mail_claimed_until BIGINT,
    emailed_at BIGINT,
    FOREIGN KEY (user_id) REFERENCES users (id),
    INDEX notices_by_user (user_id, id),
    INDEX notices_to_mail (mail_state, mail_next_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Writes that are safe to retry (PROTOCOL.md 1.2): a member's key and the first successful
-- answer for it, stored in the transaction of the write itself. The primary key is the row
-- that serialises two requests with one key, on every node. Swept after 24 hours.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id INTEGER NOT NULL,
    idem_key VARCHAR(64) NOT NULL,
    cmd VARCHAR(32) NOT NULL,
    fingerprint CHAR(64) NOT NULL,
    result MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, idem_key),
    INDEX idempotency_by_age (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
