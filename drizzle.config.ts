import { defineConfig } from 'drizzle-kit';

// `npm run db:generate` writes a new SQL migration to db/migrations/ after a schema change; commit it.
// The files are applied at start by db/migrate.ts.
export default defineConfig({
  dialect: 'postgresql',
  schema: './db/schema/*.ts',
  out: './db/migrations',
  strict: true,
  verbose: true,
});
