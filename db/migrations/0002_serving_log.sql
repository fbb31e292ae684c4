CREATE TABLE "feedback" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"request_id" uuid,
	"user_id" text NOT NULL,
	"item_id" text NOT NULL,
	"label" real NOT NULL,
	"rating" real,
	"ts" timestamp with time zone NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "feedback_user_item_ts_uq" UNIQUE("user_id","item_id","ts"),
	CONSTRAINT "feedback_label_check" CHECK ("feedback"."label" in (0, 1))
);
--> statement-breakpoint
CREATE TABLE "predictions" (
	"request_id" uuid NOT NULL,
	"idx" integer NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"model_version_id" integer NOT NULL,
	"user_id" text NOT NULL,
	"item_id" text NOT NULL,
	"p" double precision NOT NULL,
	"p_crm" double precision NOT NULL,
	"p_llm" double precision,
	"route" text NOT NULL,
	"entropy" double precision NOT NULL,
	"latency_ms" double precision NOT NULL,
	"cold" boolean NOT NULL,
	CONSTRAINT "predictions_request_id_idx_pk" PRIMARY KEY("request_id","idx"),
	CONSTRAINT "predictions_route_check" CHECK ("predictions"."route" in ('crm', 'llm', 'crm-fallback'))
);
--> statement-breakpoint
CREATE TABLE "served_requests" (
	"request_id" uuid PRIMARY KEY NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"model_version_id" integer NOT NULL,
	"user_id" text NOT NULL,
	"history" jsonb,
	"budget_ms" double precision,
	"threshold" double precision NOT NULL
);
--> statement-breakpoint
ALTER TABLE "predictions" ADD CONSTRAINT "predictions_request_id_served_requests_request_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."served_requests"("request_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "predictions" ADD CONSTRAINT "predictions_model_version_id_model_versions_id_fk" FOREIGN KEY ("model_version_id") REFERENCES "public"."model_versions"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "served_requests" ADD CONSTRAINT "served_requests_model_version_id_model_versions_id_fk" FOREIGN KEY ("model_version_id") REFERENCES "public"."model_versions"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "feedback_request_item_idx" ON "feedback" USING btree ("request_id","item_id");--> statement-breakpoint
CREATE INDEX "feedback_received_at_idx" ON "feedback" USING btree ("received_at");--> statement-breakpoint
CREATE INDEX "feedback_ts_idx" ON "feedback" USING btree ("ts");--> statement-breakpoint
CREATE INDEX "predictions_version_at_idx" ON "predictions" USING btree ("model_version_id","at");--> statement-breakpoint
CREATE INDEX "predictions_user_item_at_idx" ON "predictions" USING btree ("user_id","item_id","at");--> statement-breakpoint
CREATE INDEX "served_requests_version_at_idx" ON "served_requests" USING btree ("model_version_id","at");--> statement-breakpoint
-- Hand-written (drizzle-kit does not model triggers): notify servers when what they serve changes, so a
-- promotion or an applied recalibration reaches them without polling. pg_notify is delivered at commit,
-- so listeners never see a change that rolled back. Payload: {modelName, alias, versionId, kind}.
CREATE OR REPLACE FUNCTION corella_notify_alias() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('corella_models', json_build_object(
      'modelName', OLD.model_name, 'alias', OLD.alias, 'versionId', OLD.model_version_id,
      'kind', 'alias-removed')::text);
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.model_version_id = NEW.model_version_id
     AND OLD.model_name = NEW.model_name AND OLD.alias = NEW.alias THEN
    RETURN NEW;
  END IF;
  PERFORM pg_notify('corella_models', json_build_object(
    'modelName', NEW.model_name, 'alias', NEW.alias, 'versionId', NEW.model_version_id,
    'kind', 'alias')::text);
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "model_aliases_notify" AFTER INSERT OR UPDATE OR DELETE ON "model_aliases"
  FOR EACH ROW EXECUTE FUNCTION corella_notify_alias();
--> statement-breakpoint
-- A threshold change concerns every alias on the version; the payload names the version (alias null) and
-- the server compares it with the version it serves.
CREATE OR REPLACE FUNCTION corella_notify_threshold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('corella_models', json_build_object(
    'modelName', NEW.model_name, 'alias', NULL, 'versionId', NEW.id, 'kind', 'threshold',
    'threshold', NEW.calibrated_threshold)::text);
  RETURN NEW;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "model_versions_threshold_notify" AFTER UPDATE OF "calibrated_threshold" ON "model_versions"
  FOR EACH ROW WHEN (OLD.calibrated_threshold IS DISTINCT FROM NEW.calibrated_threshold)
  EXECUTE FUNCTION corella_notify_threshold();
