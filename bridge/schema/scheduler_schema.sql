-- The reference schema of the Mogli Scheduler database (CONTRACT §4).
-- One source: bridge/schema/ (shipped in the wheel); config/ links to it (tests/unit/test_packaging.py).
-- No CHECK constraints on purpose: real data breaks rules, and the bridge meets bad rows with a recorded error.
CREATE SCHEMA IF NOT EXISTS scheduler;

CREATE TABLE scheduler.organizations (   -- CONTRACT §9: one row per customer
  id uuid PRIMARY KEY, name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE scheduler.salesforce_connections (
  organization_id uuid PRIMARY KEY REFERENCES scheduler.organizations(id),
  login_url text NOT NULL,                 -- where tokens are requested: the org's My Domain, or the login/test host
  username text NOT NULL,                  -- the org's integration user: JWT subject, and the user the bridge writes as
  status text NOT NULL DEFAULT 'connected',-- 'connected' | 'disconnected'
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE scheduler.users (
  id uuid PRIMARY KEY, email text NOT NULL, full_name text NOT NULL,
  salesforce_user_id text,                 -- 005... of the connected Salesforce user, NULL when none
  organization_id uuid REFERENCES scheduler.organizations(id),  -- NULL: the default org of [salesforce]
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE scheduler.scheduling_links (
  id uuid PRIMARY KEY,
  link_type text NOT NULL,                 -- 'one_on_one' | 'round_robin' | 'rsvp'
  owner_id uuid NOT NULL REFERENCES scheduler.users(id),   -- who created the link
  title text NOT NULL, description text, duration_minutes integer NOT NULL,
  is_active boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE scheduler.bookings (
  id uuid PRIMARY KEY,
  link_id uuid NOT NULL REFERENCES scheduler.scheduling_links(id),
  assigned_user_id uuid REFERENCES scheduler.users(id),    -- round robin: the selected user
  start_at timestamptz NOT NULL, end_at timestamptz NOT NULL,
  status text NOT NULL,                    -- 'scheduled' | 'cancelled'
  invitee_name text NOT NULL, invitee_email text,
  related_record_id text,                  -- Salesforce id of the record the booking belongs to: Contact, Lead or any other object
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
