// Types of dist-state.mjs (plain JavaScript: it runs before anything is compiled) for the tests.
export declare const root: string;
export declare const distDir: string;
export declare const stampPath: string;
export declare function sourceRoots(base?: string): string[];
export declare function newestSource(base?: string, roots?: string[]): { path: string; mtimeMs: number };
export declare function distStaleness(base?: string): string | undefined;
