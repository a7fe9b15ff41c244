-- Rows that name another tenant-owned row name one of their own tenant's
-- (the rule migration 0002 set for the first tables, now for every one).
-- A foreign key is checked past row-level security: with the id alone, a
-- row of tenant A could point at tenant B's facility, child, session or
-- alert — and, where the key of the table leaves the tenant out, take the
-- place B's own row would need. Each key now carries the tenant, and the
-- tables it points at say (tenant_id, id) is unique.

ALTER TABLE applications ADD CONSTRAINT applications_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE incidents ADD CONSTRAINT incidents_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE sessions ADD CONSTRAINT sessions_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE memberships ADD CONSTRAINT memberships_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE detection_alerts ADD CONSTRAINT detection_alerts_tenant_id_id_key UNIQUE (tenant_id, id);

ALTER TABLE facility_places ADD CONSTRAINT facility_places_tenant_facility_fkey FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE facility_priorities ADD CONSTRAINT facility_priorities_tenant_facility_fkey FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE facility_api_keys ADD CONSTRAINT facility_api_keys_tenant_facility_fkey FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE offers ADD CONSTRAINT offers_tenant_facility_fkey FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE offers ADD CONSTRAINT offers_tenant_application_fkey FOREIGN KEY (tenant_id, application_id) REFERENCES applications (tenant_id, id);
ALTER TABLE allocation_cutoffs ADD CONSTRAINT allocation_cutoffs_tenant_facility_fkey FOREIGN KEY (tenant_id, facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE assisted_sessions ADD CONSTRAINT assisted_sessions_tenant_facility_fkey FOREIGN KEY (tenant_id, agent_facility_id) REFERENCES facilities (tenant_id, id);
ALTER TABLE assisted_sessions ADD CONSTRAINT assisted_sessions_tenant_session_fkey FOREIGN KEY (tenant_id, agent_session_id) REFERENCES sessions (tenant_id, id);
ALTER TABLE protected_files ADD CONSTRAINT protected_files_tenant_child_fkey FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id);
ALTER TABLE protected_file_openings ADD CONSTRAINT protected_file_openings_tenant_child_fkey FOREIGN KEY (tenant_id, child_id) REFERENCES children (tenant_id, id);
ALTER TABLE protected_file_openings ADD CONSTRAINT protected_file_openings_tenant_alert_fkey FOREIGN KEY (tenant_id, alert_id) REFERENCES detection_alerts (tenant_id, id);
ALTER TABLE incident_notices ADD CONSTRAINT incident_notices_tenant_incident_fkey FOREIGN KEY (tenant_id, incident_id) REFERENCES incidents (tenant_id, id);
ALTER TABLE incident_versions ADD CONSTRAINT incident_versions_tenant_incident_fkey FOREIGN KEY (tenant_id, incident_id) REFERENCES incidents (tenant_id, id);
ALTER TABLE privilege_requests ADD CONSTRAINT privilege_requests_tenant_membership_fkey FOREIGN KEY (tenant_id, membership_id) REFERENCES memberships (tenant_id, id);
ALTER TABLE break_glass ADD CONSTRAINT break_glass_tenant_session_fkey FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id);
ALTER TABLE passkey_enrolment_links ADD CONSTRAINT passkey_enrolment_links_tenant_session_fkey FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id);
ALTER TABLE detection_alert_notes ADD CONSTRAINT detection_alert_notes_tenant_alert_fkey FOREIGN KEY (tenant_id, alert_id) REFERENCES detection_alerts (tenant_id, id);
ALTER TABLE detection_webhook_deliveries ADD CONSTRAINT detection_webhook_deliveries_tenant_alert_fkey FOREIGN KEY (tenant_id, alert_id) REFERENCES detection_alerts (tenant_id, id);
ALTER TABLE account_reinstatements ADD CONSTRAINT account_reinstatements_tenant_alert_fkey FOREIGN KEY (tenant_id, alert_id) REFERENCES detection_alerts (tenant_id, id);
