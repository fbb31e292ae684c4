CREATE TABLE "artifacts" (
	"sha256" text PRIMARY KEY NOT NULL,
	"uri" text NOT NULL,
	"bytes" bigint NOT NULL,
	"media_type" text DEFAULT 'application/octet-stream' NOT NULL,
	"producing_run_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "artifacts_sha256_check" CHECK ("artifacts"."sha256" ~ '^[0-9a-f]{64}$'),
	CONSTRAINT "artifacts_bytes_check" CHECK ("artifacts"."bytes" >= 0)
);
--> statement-breakpoint
CREATE TABLE "calibrations" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" uuid NOT NULL,
	"model_version_id" integer,
	"threshold" double precision NOT NULL,
	"metric" text NOT NULL,
	"curve" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "calibrations_run_metric_uq" UNIQUE("run_id","metric")
);
--> statement-breakpoint
CREATE TABLE "dataset_versions" (
	"version_id" text PRIMARY KEY NOT NULL,
	"dataset_name" text NOT NULL,
	"source" text NOT NULL,
	"params" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"input_sha256s" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"counts" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"split_sizes" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"feature_map_sha256" text,
	"manifest" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "datasets" (
	"name" text PRIMARY KEY NOT NULL,
	"source" text NOT NULL,
	"description" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "evaluations" (
	"id" serial PRIMARY KEY NOT NULL,
	"run_id" uuid NOT NULL,
	"model_version_id" integer,
	"kind" text NOT NULL,
	"payload" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "evaluations_run_kind_version_uq" UNIQUE NULLS NOT DISTINCT("run_id","kind","model_version_id")
);
--> statement-breakpoint
CREATE TABLE "model_alias_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"model_name" text NOT NULL,
	"alias" text NOT NULL,
	"from_version_id" integer,
	"to_version_id" integer,
	"reason" text DEFAULT '' NOT NULL,
	"actor" text NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "model_aliases" (
	"model_name" text NOT NULL,
	"alias" text NOT NULL,
	"model_version_id" integer NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "model_aliases_model_name_alias_pk" PRIMARY KEY("model_name","alias")
);
--> statement-breakpoint
CREATE TABLE "model_versions" (
	"id" serial PRIMARY KEY NOT NULL,
	"model_name" text DEFAULT 'corella' NOT NULL,
	"source_run_id" uuid NOT NULL,
	"dataset_version_id" text,
	"artifacts" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"metrics" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"calibrated_threshold" double precision,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "model_versions_source_run_id_unique" UNIQUE("source_run_id")
);
--> statement-breakpoint
CREATE TABLE "run_metrics" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"run_id" uuid NOT NULL,
	"key" text NOT NULL,
	"step" integer DEFAULT 0 NOT NULL,
	"value" double precision NOT NULL,
	"time" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "run_metrics_run_key_step_uq" UNIQUE("run_id","key","step")
);
--> statement-breakpoint
CREATE TABLE "run_params" (
	"run_id" uuid NOT NULL,
	"key" text NOT NULL,
	"value" text NOT NULL,
	CONSTRAINT "run_params_run_id_key_pk" PRIMARY KEY("run_id","key")
);
--> statement-breakpoint
CREATE TABLE "runs" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"workflow_id" text NOT NULL,
	"kind" text NOT NULL,
	"config" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"status" text DEFAULT 'running' NOT NULL,
	"error" text,
	"code_version" text,
	"attempt" integer DEFAULT 1 NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"ended_at" timestamp with time zone,
	"dataset_version_id" text,
	"summary" jsonb,
	CONSTRAINT "runs_workflow_id_unique" UNIQUE("workflow_id"),
	CONSTRAINT "runs_status_check" CHECK ("runs"."status" in ('running', 'completed', 'failed', 'cancelled'))
);
--> statement-breakpoint
ALTER TABLE "artifacts" ADD CONSTRAINT "artifacts_producing_run_id_runs_id_fk" FOREIGN KEY ("producing_run_id") REFERENCES "public"."runs"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "calibrations" ADD CONSTRAINT "calibrations_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "calibrations" ADD CONSTRAINT "calibrations_model_version_id_model_versions_id_fk" FOREIGN KEY ("model_version_id") REFERENCES "public"."model_versions"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "dataset_versions" ADD CONSTRAINT "dataset_versions_dataset_name_datasets_name_fk" FOREIGN KEY ("dataset_name") REFERENCES "public"."datasets"("name") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "dataset_versions" ADD CONSTRAINT "dataset_versions_feature_map_sha256_artifacts_sha256_fk" FOREIGN KEY ("feature_map_sha256") REFERENCES "public"."artifacts"("sha256") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "evaluations" ADD CONSTRAINT "evaluations_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "evaluations" ADD CONSTRAINT "evaluations_model_version_id_model_versions_id_fk" FOREIGN KEY ("model_version_id") REFERENCES "public"."model_versions"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_alias_events" ADD CONSTRAINT "model_alias_events_from_version_id_model_versions_id_fk" FOREIGN KEY ("from_version_id") REFERENCES "public"."model_versions"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_alias_events" ADD CONSTRAINT "model_alias_events_to_version_id_model_versions_id_fk" FOREIGN KEY ("to_version_id") REFERENCES "public"."model_versions"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_aliases" ADD CONSTRAINT "model_aliases_model_version_id_model_versions_id_fk" FOREIGN KEY ("model_version_id") REFERENCES "public"."model_versions"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_source_run_id_runs_id_fk" FOREIGN KEY ("source_run_id") REFERENCES "public"."runs"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "model_versions" ADD CONSTRAINT "model_versions_dataset_version_id_dataset_versions_version_id_fk" FOREIGN KEY ("dataset_version_id") REFERENCES "public"."dataset_versions"("version_id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "run_metrics" ADD CONSTRAINT "run_metrics_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "run_params" ADD CONSTRAINT "run_params_run_id_runs_id_fk" FOREIGN KEY ("run_id") REFERENCES "public"."runs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "runs" ADD CONSTRAINT "runs_dataset_version_id_dataset_versions_version_id_fk" FOREIGN KEY ("dataset_version_id") REFERENCES "public"."dataset_versions"("version_id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "artifacts_producing_run_idx" ON "artifacts" USING btree ("producing_run_id");--> statement-breakpoint
CREATE INDEX "calibrations_model_version_idx" ON "calibrations" USING btree ("model_version_id");--> statement-breakpoint
CREATE INDEX "dataset_versions_dataset_idx" ON "dataset_versions" USING btree ("dataset_name","created_at");--> statement-breakpoint
CREATE INDEX "evaluations_model_version_idx" ON "evaluations" USING btree ("model_version_id");--> statement-breakpoint
CREATE INDEX "model_alias_events_alias_idx" ON "model_alias_events" USING btree ("model_name","alias","at");--> statement-breakpoint
CREATE INDEX "model_versions_name_idx" ON "model_versions" USING btree ("model_name","created_at");--> statement-breakpoint
CREATE INDEX "model_versions_dataset_version_idx" ON "model_versions" USING btree ("dataset_version_id");--> statement-breakpoint
CREATE INDEX "runs_started_idx" ON "runs" USING btree ("started_at");--> statement-breakpoint
CREATE INDEX "runs_kind_status_idx" ON "runs" USING btree ("kind","status");--> statement-breakpoint
CREATE INDEX "runs_dataset_version_idx" ON "runs" USING btree ("dataset_version_id");